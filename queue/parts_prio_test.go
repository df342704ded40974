package queue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Priority levels within a partition (parts.go, "Levels within a
// partition"): Priority(l) with Partition orders the job within its
// partition only.

// partOrder is the payloads of the jobs of partition key waiting in pjobs,
// in the order the take serves them (by score).
func partOrder(t *testing.T, q *Queue, key string) []string {
	t.Helper()
	ctx := context.Background()
	c := q.p.Client()
	idx, err := c.HGet(ctx, q.k.partIdx(), key).Int64()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	require.NoError(t, err)
	lo := idx << 31
	elems, err := c.ZRangeByScore(ctx, q.k.fair(), &redis.ZRangeBy{Min: fmt.Sprint(lo), Max: fmt.Sprint(lo + 1<<31 - 1)}).Result()
	require.NoError(t, err)
	out := make([]string, 0, len(elems))
	for _, el := range elems {
		e, err := decodeEnvelope([]byte(el))
		require.NoError(t, err)
		out = append(out, string(e.payload))
	}
	return out
}

// TestPartitionPriorityJumpsItsBacklog: a level-2 job enqueued behind 100
// level-0 jobs of its partition is that partition's next job, while the
// partitions still take turns (the other partition is not overtaken: its
// jobs alternate with this one's), and Get reports its level and
// partition.
func TestPartitionPriorityJumpsItsBacklog(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPartitionPriorityJumps(t, np) })
	}
}

func testPartitionPriorityJumps(t *testing.T, np newPoolFunc) {
	q := mustQueue(t, np(t, pool.Config{}), "pprio", Config{})
	ctx := context.Background()
	for _, part := range []string{"a", "b"} {
		backlog := make([][]byte, 100)
		for i := range backlog {
			backlog[i] = fmt.Appendf(nil, "%s%d", part, i)
		}
		_, err := q.EnqueueBatch(ctx, backlog, Partition(part))
		require.NoError(t, err)
	}
	require.ElementsMatch(t, []string{"a0", "b0"}, takeFor(t, q, "c", 2))
	_, err := q.Enqueue(ctx, []byte("urgent"), Partition("a"), Priority(2), ID("urgent"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("soon"), Partition("a"), Priority(1))
	require.NoError(t, err)
	checkPartCounts(t, q)
	require.Equal(t, []string{"urgent", "soon", "a1", "a2"}, partOrder(t, q, "a")[:4])
	info, err := q.Get(ctx, "urgent")
	require.NoError(t, err)
	require.Equal(t, 2, info.Priority)
	require.Equal(t, "a", info.Partition)
	require.Equal(t, StateReady, info.State)

	got := takeFor(t, q, "c", 8)
	require.Len(t, got, 8)
	var as, bs []string
	for i, p := range got {
		if strings.HasPrefix(p, "b") {
			bs = append(bs, p)
		} else {
			as = append(as, p)
		}
		if i%2 == 1 {
			require.NotEqual(t, p[0], got[i-1][0], "the partitions still take turns: %v", got)
		}
	}
	require.Equal(t, []string{"urgent", "soon", "a1", "a2"}, as, "a's levels first, then its backlog in order")
	require.Equal(t, []string{"b1", "b2", "b3", "b4"}, bs, "b's turns are not taken by a's level")
	checkPartCounts(t, q)
}

// TestPartitionPriorityPutBackAndRetry: a job put back (recovery of a
// closing or dead consumer's jobs) goes to the front of its level in its
// partition, ahead of its level's other jobs and behind the higher
// levels; a retry goes to the back of its level when due.
func TestPartitionPriorityPutBackAndRetry(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPartitionPriorityPutBack(t, np) })
	}
}

func testPartitionPriorityPutBack(t *testing.T, np newPoolFunc) {
	q := mustQueue(t, np(t, pool.Config{}), "pprioback", Config{})
	ctx := context.Background()
	c := q.p.Client()
	enq := func(payload string, level int) {
		t.Helper()
		_, err := q.Enqueue(ctx, []byte(payload), Partition("a"), Priority(level), ID(payload))
		require.NoError(t, err)
	}
	enq("x1", 0)
	enq("h1", 2)
	enq("m1", 1)
	enq("x2", 0)
	enq("h2", 2)
	require.Equal(t, []string{"h1", "h2", "m1", "x1", "x2"}, partOrder(t, q, "a"))

	// h1 and h2 taken, then put back (in the processing list's
	// order, as a closing worker does): ahead of m1, in order.
	require.Equal(t, []string{"h1", "h2"}, takeFor(t, q, "c", 2))
	proc, err := c.LRange(ctx, q.k.proc("c"), 0, -1).Result()
	require.NoError(t, err)
	args := []any{}
	for _, el := range proc {
		args = append(args, el, el)
	}
	require.EqualValues(t, 2, recoverScript.Run(ctx, c, q.k.recoverKeys(q.k.proc("c")), args...).Val())
	require.Equal(t, []string{"h1", "h2", "m1", "x1", "x2"}, partOrder(t, q, "a"), "put back ahead of its level")
	checkPartCounts(t, q)

	// m1 put back while a level-1 job waits: ahead of it.
	enq("m2", 1)
	require.Equal(t, []string{"h1", "h2", "m1"}, takeFor(t, q, "c", 3))
	proc, err = c.LRange(ctx, q.k.proc("c"), 0, 0).Result()
	require.NoError(t, err)
	e, err := decodeEnvelope([]byte(proc[0]))
	require.NoError(t, err)
	require.Equal(t, "m1", string(e.payload))
	require.EqualValues(t, 1, recoverScript.Run(ctx, c, q.k.recoverKeys(q.k.proc("c")), proc[0], proc[0]).Val())
	require.Equal(t, []string{"m1", "m2", "x1", "x2"}, partOrder(t, q, "a"))

	// h1's retry, due now: behind h2's level-mates, ahead of level 1.
	enq("h3", 2)
	require.Equal(t, []string{"h3"}, takeFor(t, q, "c", 1))
	proc, err = c.LRange(ctx, q.k.proc("c"), 0, 0).Result()
	require.NoError(t, err)
	enq("h4", 2)
	require.EqualValues(t, 1, retryScript.Run(ctx, c, []string{q.k.proc("c"), q.k.delayed, q.k.ready, q.k.wake, q.k.bell, q.k.partLen()},
		proc[0], proc[0], time.Now().UnixMilli(), wakeMarker, wakeTTL.Milliseconds(), "0").Val())
	checkPartCounts(t, q)
	_, err = promoteScript.Run(ctx, c, q.k.promoteKeys(), time.Now().Add(time.Second).UnixMilli(), 100, "0").Result()
	require.NoError(t, err)
	require.Equal(t, []string{"h4", "h3", "m1", "m2", "x1", "x2"}, partOrder(t, q, "a"))
	checkPartCounts(t, q)
}

// TestPartitionPriorityKeptOnRetryAndRequeue: through a worker, a
// partitioned job's level survives its retry and the requeue of its dead
// letter, which goes ahead of the partition's level-0 jobs.
func TestPartitionPriorityKeptOnRetryAndRequeue(t *testing.T) {
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "ppriorq", Config{MaxAttempts: 2})
	ctx := context.Background()
	type run struct {
		part           string
		level, attempt int
	}
	runs := make(chan run, 8)
	startWorker(t, group(t), q, func(ctx context.Context, j *Job) error {
		runs <- run{j.Partition, j.Priority, j.Attempt}
		return errors.New("fails")
	}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }})
	_, err := q.Enqueue(ctx, []byte("r"), Partition("t1"), Priority(3), ID("r1"))
	require.NoError(t, err)
	require.Equal(t, run{"t1", 3, 1}, recv(t, runs, 10*time.Second, "the first run"))
	require.Equal(t, run{"t1", 3, 2}, recv(t, runs, 10*time.Second, "the retry"))
	testutil.Eventually(t, 10*time.Second, "dead", func() bool {
		d, err := q.Dead(ctx, 0, 10)
		return err == nil && len(d) == 1
	})
	require.NoError(t, q.Pause(ctx))
	_, err = q.Enqueue(ctx, []byte("z"), Partition("t1"))
	require.NoError(t, err)
	n, err := q.Requeue(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, []string{"r", "z"}, partOrder(t, q, "t1"), "the requeued job ahead of the level-0 job")
	info, err := q.Get(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, 3, info.Priority)
	checkPartCounts(t, q)
	require.NoError(t, q.Resume(ctx))
	// One take may hand both to the handlers: either may report first.
	require.ElementsMatch(t, []run{{"t1", 3, 1}, {"t1", 0, 1}},
		[]run{recv(t, runs, 10*time.Second, "a run"), recv(t, runs, 10*time.Second, "the other run")})
}

// TestPartitionPriorityOfSchedules: JobPartition with JobPriority, in
// either order, gives every occurrence both; it runs ahead of its
// partition's level-0 jobs.
func TestPartitionPriorityOfSchedules(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "cronpprio", Config{})
	ctx := context.Background()
	for i, opts := range [][]ScheduleOption{{JobPartition("t"), JobPriority(2)}, {JobPriority(2), JobPartition("t")}} {
		name := fmt.Sprint("s", i)
		require.NoError(t, q.Schedule(ctx, name, Every(time.Minute), []byte(name), opts...))
		d, _, err := q.scheduleDef(name, Every(time.Minute), []byte(name), opts)
		require.NoError(t, err)
		require.NoError(t, q.enqueueOccurrence(ctx, name, d, time.Now().Add(-time.Second).UnixMilli()))
	}
	_, err := q.Enqueue(ctx, []byte("plain"), Partition("t"))
	require.NoError(t, err)
	_, err = promoteScript.Run(ctx, p.Client(), q.k.promoteKeys(), time.Now().UnixMilli(), 100, "0").Result()
	require.NoError(t, err)
	got := partOrder(t, q, "t")
	require.Len(t, got, 3)
	require.ElementsMatch(t, []string{"s0", "s1"}, got[:2])
	require.Equal(t, "plain", got[2])
	checkPartCounts(t, q)
}

// TestPartitionPriorityBandsScript drives partLua's enqueue-side scoring
// (partAdd at the back or the front, a take of the partition's first job)
// with tiny bands, so that the levels' bands run out at either end and
// renumber often: after every call the partition's order is the model's
// (higher levels first; within a level, the jobs put back, last put back
// first, then the others in enqueue order), every score lies in its
// level's band, and the bookkeeping holds. Several adds go in one call, as
// a batch does (partEdges).
func TestPartitionPriorityBandsScript(t *testing.T) {
	const span, band = 1 << 10, 1 << 6 // levels 1..3: 64 positions each; level 0: 832
	script := redis.NewScript(partLuaFor(span, band) + `
local P = partKeysAt(1)
local i = 1
while i <= #ARGV do
  if ARGV[i] == 'take' then
    local idx = redis.call('HGET', P.idx, ARGV[i+1])
    local js = partJobs(P, tonumber(idx), 0, 1)
    partDel(P, js[1])
    i = i + 2
  else
    partAdd(P, ARGV[i+1], ARGV[i+2], ARGV[i] == 'front', false)
    i = i + 3
  end
end
return 1
`)
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := srv.addr(t)
			p := mustPool(t, pool.Config{Addrs: []string{addr}})
			q := mustQueue(t, p, "bands", Config{})
			c := p.Client()
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(17, 71))
			// model[key][level]: the jobs, in order.
			model := map[string][][]string{}
			scores := map[string]float64{}
			levelOfJob := map[string]int{}
			renumbered, seq := 0, 0
			elem := func(key string, level int) (string, string) {
				seq++
				id := fmt.Sprint("j", seq)
				e := envelope{id: id, maxAttempts: 1, part: key, level: level, payload: []byte(id)}
				levelOfJob[id] = level
				return id, string(e.encode())
			}
			keysOf := []string{"a", "b"}
			for range 1500 {
				var args []any
				for range 1 + rng.IntN(4) {
					key := keysOf[rng.IntN(len(keysOf))]
					if model[key] == nil {
						model[key] = make([][]string, MaxLevel+1)
					}
					total := 0
					for _, l := range model[key] {
						total += len(l)
					}
					r := rng.IntN(10)
					switch {
					case r < 4 && total > 0:
						for l := MaxLevel; l >= 0; l-- {
							if len(model[key][l]) > 0 {
								model[key][l] = model[key][l][1:]
								break
							}
						}
						args = append(args, "take", key)
					default:
						level := rng.IntN(MaxLevel + 1)
						if len(model[key][level]) >= 40 { // a band's room (64) with slack
							continue
						}
						id, el := elem(key, level)
						if r < 6 {
							model[key][level] = append([]string{id}, model[key][level]...)
							args = append(args, "front", key, el)
						} else {
							model[key][level] = append(model[key][level], id)
							args = append(args, "back", key, el)
						}
					}
				}
				if len(args) == 0 {
					continue
				}
				require.NoError(t, script.Run(ctx, c, q.k.partKeys(), args...).Err())
				for _, key := range keysOf {
					var want []string
					for l := MaxLevel; l >= 0; l-- {
						if model[key] != nil {
							want = append(want, model[key][l]...)
						}
					}
					idx, err := c.HGet(ctx, q.k.partIdx(), key).Int64()
					if len(want) == 0 {
						require.ErrorIs(t, err, redis.Nil, "a partition without jobs is forgotten")
						continue
					}
					require.NoError(t, err)
					lo := idx * span
					zs, err := c.ZRangeByScoreWithScores(ctx, q.k.fair(), &redis.ZRangeBy{Min: fmt.Sprint(lo), Max: fmt.Sprint(lo + span - 1)}).Result()
					require.NoError(t, err)
					var got []string
					for _, z := range zs {
						e, err := decodeEnvelope([]byte(z.Member.(string)))
						require.NoError(t, err)
						id := string(e.payload)
						got = append(got, id)
						off := int64(z.Score) - lo
						l := levelOfJob[id]
						bandLo, bandHi := int64(MaxLevel*band), int64(span-1)
						if l > 0 {
							bandLo = int64((MaxLevel - l) * band)
							bandHi = bandLo + band - 1
						}
						require.GreaterOrEqual(t, off, bandLo, "%s (level %d) below its band", id, l)
						require.LessOrEqual(t, off, bandHi, "%s (level %d) above its band", id, l)
						if s, ok := scores[id]; ok && s != z.Score {
							renumbered++
						}
						scores[id] = z.Score
					}
					require.Equal(t, want, got, "partition %s", key)
				}
			}
			require.Greater(t, renumbered, 100, "the bands ran out and renumbered")

			// A band that cannot hold one more job refuses it, writing
			// nothing: 64 level-3 jobs fill theirs.
			require.NoError(t, c.FlushDB(ctx).Err())
			var args []any
			for range band {
				_, el := elem("f", 3)
				args = append(args, "back", "f", el)
			}
			require.NoError(t, script.Run(ctx, c, q.k.partKeys(), args...).Err())
			_, el := elem("f", 3)
			err := script.Run(ctx, c, q.k.partKeys(), "back", "f", el).Err()
			require.ErrorContains(t, err, "level 3 of partition f")
			n, err := c.ZCard(ctx, q.k.fair()).Result()
			require.NoError(t, err)
			require.EqualValues(t, band, n)
		})
	}
}

// TestPartitionPriorityDebounce: a debounced partitioned job, and its
// replacement, keep their level when they fire: ahead of the partition's
// level-0 job enqueued before them.
func TestPartitionPriorityDebounce(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			q := mustQueue(t, np(t, pool.Config{}), "pdeb", Config{})
			ctx := context.Background()
			_, err := q.Enqueue(ctx, []byte("plain"), Partition("a"))
			require.NoError(t, err)
			at := time.Now().Add(time.Minute)
			_, err = q.Enqueue(ctx, []byte("first"), ID("d"), Debounce(), At(at), Partition("a"), Priority(1))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte("second"), ID("d"), ReplacePayload(), At(at), Partition("a"), Priority(2))
			require.NoError(t, err)
			checkPartCounts(t, q)
			_, err = promoteScript.Run(ctx, q.p.Client(), q.k.promoteKeys(), at.Add(time.Second).UnixMilli(), 100, "0").Result()
			require.NoError(t, err)
			require.Equal(t, []string{"second", "plain"}, partOrder(t, q, "a"))
			info, err := q.Get(ctx, "d")
			require.NoError(t, err)
			require.Equal(t, 2, info.Priority)
			checkPartCounts(t, q)
		})
	}
}

// TestPartitionPriorityOldLayout: a job the layout before levels left in
// a partition (its first job at seq 2^30) is in level 0's band: a later
// level-0 job runs after it, a level-1 job before it.
func TestPartitionPriorityOldLayout(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			q := mustQueue(t, np(t, pool.Config{}), "pold", Config{})
			ctx := context.Background()
			c := q.p.Client()
			_, err := q.Enqueue(ctx, []byte("old"), Partition("a"))
			require.NoError(t, err)
			idx, err := c.HGet(ctx, q.k.partIdx(), "a").Int64()
			require.NoError(t, err)
			elems, err := c.ZRange(ctx, q.k.fair(), 0, -1).Result()
			require.NoError(t, err)
			require.Len(t, elems, 1)
			require.NoError(t, c.ZAddXX(ctx, q.k.fair(), redis.Z{Score: float64(idx<<31 + 1<<30), Member: elems[0]}).Err())
			_, err = q.Enqueue(ctx, []byte("new"), Partition("a"))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte("high"), Partition("a"), Priority(1))
			require.NoError(t, err)
			require.Equal(t, []string{"high", "old", "new"}, partOrder(t, q, "a"))
			require.Equal(t, []string{"high", "old", "new"}, takeFor(t, q, "c", 3))
			checkPartCounts(t, q)
		})
	}
}
