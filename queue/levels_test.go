package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// order records the payloads a handler ran, in order.
type order struct {
	mu  sync.Mutex
	got []string
}

func (o *order) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, s)
}

func (o *order) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.got...)
}

func TestPriorityJumpsTheBacklog(t *testing.T) { testPriorityJumpsTheBacklog(t, miniPool) }
func TestPriorityJumpsTheBacklog_Server(t *testing.T) {
	testPriorityJumpsTheBacklog(t, serverPool)
}

// testPriorityJumpsTheBacklog: one handler slot, busy with the first job of
// a backlog of 20; jobs enqueued behind the backlog at levels 1, 3 and 2
// (one through EnqueueBatch, one with an ID, one with a payload kept
// apart) start as soon as the slot is free, highest level first; then the
// backlog, in its order.
func testPriorityJumpsTheBacklog(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "levels", Config{})
	ctx := context.Background()
	started, gate := make(chan struct{}, 1), make(chan struct{})
	var ran order
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		ran.add(fmt.Sprintf("%s@%d", j.Payload[:min(len(j.Payload), 8)], j.Priority))
		if string(j.Payload) == "low0" {
			started <- struct{}{}
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
		return nil
	}, WorkerConfig{Concurrency: 1})
	for i := range 20 {
		_, err := q.Enqueue(ctx, []byte(fmt.Sprint("low", i)))
		require.NoError(t, err)
	}
	testutil.Recv(t, started, "the first job of the backlog")
	_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("one")}, Priority(1))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("three"), Priority(3), ID("the-three"))
	require.NoError(t, err)
	big := append([]byte("two"), make([]byte, inlineMax+1)...) // kept apart
	_, err = q.Enqueue(ctx, big, Priority(2))
	require.NoError(t, err)

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(22), s.Ready, "Stats counts the level lists")
	require.Positive(t, s.OldestReady)

	close(gate)
	testutil.Eventually(t, 10*time.Second, "23 jobs", func() bool { return w.Stats().Processed == 23 })
	want := []string{"low0@0", "three@3", "two\x00\x00\x00\x00\x00@2", "one@1"}
	for i := 1; i < 20; i++ {
		want = append(want, fmt.Sprint("low", i, "@0"))
	}
	require.Equal(t, want, ran.list())
}

func TestPriorityOutOfRangeIsRefused(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "badlevel", Config{})
	ctx := context.Background()
	for _, l := range []int{-1, MaxLevel + 1, 100} {
		_, err := q.Enqueue(ctx, []byte("x"), Priority(l))
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, fmt.Sprintf("Priority(%d)", l))
		require.ErrorContains(t, err, "the levels are 0 to 3")
		_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("x")}, Priority(l))
		require.ErrorIs(t, err, ErrInvalidArgument)
		_, err = EnqueueJSON(ctx, q, map[string]int{"a": 1}, Priority(l))
		require.ErrorIs(t, err, ErrInvalidArgument)
	}
	keys, err := p.Client().Keys(ctx, "*").Result()
	require.NoError(t, err)
	require.Empty(t, keys, "nothing written")
}

func TestPriorityEnvelope(t *testing.T) {
	for l := 0; l <= MaxLevel; l++ {
		hs, err := encodeHeaders([]header{{"k", "v"}})
		require.NoError(t, err)
		e := envelope{id: "a", maxAttempts: 1, enqueuedAt: time.UnixMilli(5), typ: "t", unique: true, headers: hs, level: l, payload: []byte("p|p")}
		b := e.encode()
		got, err := decodeEnvelope(b)
		require.NoError(t, err)
		require.Equal(t, l, got.level)
		require.Equal(t, "p|p", string(got.payload))
		e.level = 0
		require.Equal(t, l > 0, len(b) == len(e.encode())+2, "level 0 adds no byte, another two")
	}
	for _, flags := range []string{"p0", "p4", "p", "pp1", "p1u", "p12", "p1p2", "p:"} {
		_, err := decodeEnvelope([]byte("bq1|a|0|1|0|5|0|" + flags + "|x"))
		require.ErrorIs(t, err, errMalformed, flags)
	}
}

// TestPriorityLuaReadsTheLevel: the scripts that route a job by its level
// (promote, recover, sweep) read the flag as the Go decoder does.
func TestPriorityLuaReadsTheLevel(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			q := mustQueue(t, p, "lua", Config{})
			ctx := context.Background()
			c := p.Client()
			var elems []string
			for l := 0; l <= MaxLevel; l++ {
				e := envelope{id: fmt.Sprint("j", l), maxAttempts: 1, enqueuedAt: time.UnixMilli(5), level: l, deadline: time.UnixMilli(9), window: time.Second, payload: []byte("|p3|")}
				elems = append(elems, string(e.encode()))
				require.NoError(t, c.ZAdd(ctx, q.k.delayed, redis.Z{Score: 1, Member: elems[l]}).Err())
			}
			res, err := promoteScript.Run(ctx, c, q.k.promoteKeys(), 10, 100, "0").Int64Slice()
			require.NoError(t, err)
			require.Equal(t, int64(4), res[0])
			for l := 0; l <= MaxLevel; l++ {
				got, err := c.LRange(ctx, q.k.readyAt(l), 0, -1).Result()
				require.NoError(t, err)
				require.Equal(t, []string{elems[l]}, got, "level %d", l)
			}
			// A put-back (recover) of taken jobs: each to its level's take end.
			proc := q.k.proc("c1")
			var pairs []any
			for l := 0; l <= MaxLevel; l++ {
				require.NoError(t, c.LPush(ctx, proc, elems[l]).Err())
				pairs = append(pairs, elems[l], elems[l]+"x")
			}
			n, err := recoverScript.Run(ctx, c, q.k.recoverKeys(proc), pairs...).Int()
			require.NoError(t, err)
			require.Equal(t, 4, n)
			for l := 0; l <= MaxLevel; l++ {
				last, err := c.LIndex(ctx, q.k.readyAt(l), -1).Result()
				require.NoError(t, err)
				require.Equal(t, elems[l]+"x", last, "level %d: at the take end", l)
			}
			// A dead consumer's sweep: the same.
			args := []any{"c1", ""}
			for l := 0; l <= MaxLevel; l++ {
				require.NoError(t, c.LPush(ctx, proc, elems[l]).Err())
				args = append(args, elems[l], elems[l]+"y")
			}
			n, err = sweepScript.Run(ctx, c, q.k.sweepKeys(proc), args...).Int()
			require.NoError(t, err)
			require.Equal(t, 4, n)
			for l := 0; l <= MaxLevel; l++ {
				last, err := c.LIndex(ctx, q.k.readyAt(l), -1).Result()
				require.NoError(t, err)
				require.Equal(t, elems[l]+"y", last, "level %d: at the take end", l)
			}
			// Only a level list holds jobs: the sweep still rings.
			require.NoError(t, c.Del(ctx, q.k.ready, q.k.bell).Err())
			_, err = sweepScript.Run(ctx, c, q.k.sweepKeys(proc), "c1", "").Int()
			require.NoError(t, err)
			require.EqualValues(t, 1, c.ZCard(ctx, q.k.bell).Val())
		})
	}
}

func TestPriorityRetryAndRequeueKeepTheLevel(t *testing.T) {
	testPriorityRetryAndRequeue(t, miniPool)
}
func TestPriorityRetryAndRequeueKeepTheLevel_Server(t *testing.T) {
	testPriorityRetryAndRequeue(t, serverPool)
}

func testPriorityRetryAndRequeue(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "keep", Config{})
	ctx := context.Background()
	type run struct {
		attempt, level int
	}
	runs := make(chan run, 10)
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		runs <- run{j.Attempt, j.Priority}
		if string(j.Payload) == "dies" {
			return Permanent(errors.New("no"))
		}
		if string(j.Payload) == "retried" && j.Attempt == 1 {
			return errors.New("again")
		}
		return nil
	}, WorkerConfig{Concurrency: 1, Backoff: func(int, error) time.Duration { return 5 * time.Millisecond }})
	_, err := q.Enqueue(ctx, []byte("retried"), Priority(2), MaxAttempts(2))
	require.NoError(t, err)
	require.Equal(t, run{1, 2}, testutil.Recv(t, runs, "the first run"))
	require.Equal(t, run{2, 2}, testutil.Recv(t, runs, "the retry"))

	// Debounced: the replacing enqueue's level is the job's.
	_, err = q.Enqueue(ctx, []byte("debounced"), Priority(1), ID("deb"), Debounce(), Delay(time.Hour))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("debounced"), Priority(2), ID("deb"), Debounce(), Delay(10*time.Millisecond))
	require.NoError(t, err)
	require.Equal(t, run{1, 2}, testutil.Recv(t, runs, "the debounced job"))

	id, err := q.Enqueue(ctx, []byte("dies"), Priority(3), Delay(10*time.Millisecond))
	require.NoError(t, err)
	require.Equal(t, run{1, 3}, testutil.Recv(t, runs, "the delayed job"))
	testutil.Eventually(t, 5*time.Second, "the dead letter", func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Dead == 1
	})
	n, err := q.Requeue(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, run{1, 3}, testutil.Recv(t, runs, "the requeued job"))
}

// TestPriorityTakeAndPause: the take serves a wake marker first, then the
// levels highest first, then level 0; a paused queue hands out no level
// job; Resume rings the doorbell when only a level list holds jobs.
func TestPriorityTakeAndPause(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			q := mustQueue(t, p, "take", Config{})
			ctx := context.Background()
			c := p.Client()
			for _, l := range []int{0, 1, 3, 0, 1} {
				_, err := q.Enqueue(ctx, []byte(fmt.Sprint(l)), Priority(l))
				require.NoError(t, err)
			}
			require.NoError(t, c.RPush(ctx, q.k.ready, wakeMarker).Err())
			ks := q.k.takeKeys(q.k.proc("c"))

			require.NoError(t, q.Pause(ctx))
			took, err := takeScript.Run(ctx, c, ks, 10).StringSlice()
			require.NoError(t, err)
			require.Equal(t, []string{wakeMarker}, took, "paused: the marker only")
			took, err = takeScript.Run(ctx, c, ks, 10).StringSlice()
			require.NoError(t, err)
			require.Empty(t, took)
			require.NoError(t, c.Del(ctx, q.k.bell).Err())
			require.NoError(t, q.Resume(ctx))
			require.EqualValues(t, 1, c.ZCard(ctx, q.k.bell).Val(), "Resume rang")

			require.NoError(t, c.RPush(ctx, q.k.ready, wakeMarker).Err())
			require.NoError(t, c.Del(ctx, q.k.bell).Err())
			took, err = takeScript.Run(ctx, c, ks, 3).StringSlice()
			require.NoError(t, err)
			require.Len(t, took, 3)
			require.Equal(t, wakeMarker, took[0])
			require.Equal(t, []int{3, 1}, levelsOf(t, took[1:]))
			require.EqualValues(t, 1, c.ZCard(ctx, q.k.bell).Val(), "jobs left: the take rang again")
			took, err = takeScript.Run(ctx, c, ks, 10).StringSlice()
			require.NoError(t, err)
			require.Equal(t, []int{1, 0, 0}, levelsOf(t, took))
			n, err := c.Exists(ctx, q.k.readyLevels()...).Result()
			require.NoError(t, err)
			require.Zero(t, n)
		})
	}
}

func levelsOf(t *testing.T, elems []string) []int {
	t.Helper()
	var ls []int
	for _, e := range elems {
		env, err := decodeEnvelope([]byte(e))
		require.NoError(t, err)
		ls = append(ls, env.level)
	}
	return ls
}

func TestPriorityMaxLenCountsEveryLevel(t *testing.T) { testPriorityMaxLen(t, miniPool) }
func TestPriorityMaxLenCountsEveryLevel_Server(t *testing.T) {
	testPriorityMaxLen(t, serverPool)
}

// testPriorityMaxLen: a bounded queue counts the jobs of every level, by
// every enqueue path (plain, batch, ID, delayed, payload kept apart, a
// batch too large for Lua), and refuses past MaxLen at any level.
func testPriorityMaxLen(t *testing.T, np newPoolFunc) {
	ctx := context.Background()
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "boundedlevels", Config{MaxLen: 306})
	_, err := q.Enqueue(ctx, []byte("a"), Priority(1))
	require.NoError(t, err)
	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("b"), []byte("c")}, Priority(2))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("d"), Priority(3), ID("d"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, make([]byte, inlineMax+1), Priority(3))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("e"), Priority(2), Delay(time.Hour))
	require.NoError(t, err)
	require.Equal(t, int64(6), queueLen(t, q))
	for l, n := range map[int]int64{1: 1, 2: 2, 3: 2} {
		require.Equal(t, n, p.Client().LLen(ctx, q.k.readyAt(l)).Val(), "level %d", l)
	}
	job := make([]byte, 4000) // a batch over maxLuaBytes: pushThenCheck
	batch := make([][]byte, 300)
	for i := range batch {
		batch[i] = job
	}
	_, err = q.EnqueueBatch(ctx, batch, Priority(1))
	require.NoError(t, err)
	require.Equal(t, int64(306), queueLen(t, q))
	for _, l := range []int{0, 1, 3} {
		_, err = q.Enqueue(ctx, []byte("over"), Priority(l))
		var full *FullError
		require.ErrorAs(t, err, &full, "level %d", l)
		require.Equal(t, int64(306), full.Len)
	}
	_, err = q.EnqueueBatch(ctx, batch, Priority(2))
	require.ErrorIs(t, err, ErrQueueFull)
	require.Equal(t, int64(306), queueLen(t, q))
	require.Zero(t, p.Client().LLen(ctx, q.k.readyAt(2)).Val()-2, "the refused batch was taken back")
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.True(t, s.Full)
}

// TestPriorityOfSchedules: JobPriority gives every occurrence its level;
// a level out of range is refused at Schedule.
func TestPriorityOfSchedules(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "cronlevels", Config{})
	ctx := context.Background()
	err := q.Schedule(ctx, "bad", Every(time.Minute), nil, JobPriority(MaxLevel+1))
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.NoError(t, q.Schedule(ctx, "ok", Every(time.Minute), nil, JobPriority(2)))
	d, _, err := q.scheduleDef("ok", Every(time.Minute), nil, []ScheduleOption{JobPriority(2)})
	require.NoError(t, err)
	require.NoError(t, q.enqueueOccurrence(ctx, "ok", d, time.Now().Add(time.Hour).UnixMilli()))
	elems, err := p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
	require.NoError(t, err)
	require.NotEmpty(t, elems)
	for _, l := range levelsOf(t, elems) {
		require.Equal(t, 2, l)
	}
}

func TestPriorityInspectorAndControl(t *testing.T) { testPriorityInspector(t, miniPool) }
func TestPriorityInspectorAndControl_Server(t *testing.T) {
	testPriorityInspector(t, serverPool)
}

// testPriorityInspector: the Inspector lists the ready jobs of every level
// in the order they are taken, counts them, and deletes one by its handle
// (a small one by its element, a large one by its position in its level);
// Get finds a level job and reports its level; Cancel takes one off its
// level's list.
func testPriorityInspector(t *testing.T, np newPoolFunc) {
	ctx := context.Background()
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "inspectlevels", Config{})
	in, err := NewInspector(p, q.cfg.Namespace)
	require.NoError(t, err)
	var ids []string
	for i, l := range []int{0, 2, 0, 2, 3, 1} {
		id, err := q.Enqueue(ctx, []byte(fmt.Sprint("job", i)), Priority(l))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	// A ready element over maxHandleElem (a Durable job's, its payload
	// inline), named by its position. Durable is refused on a Cluster:
	// written by hand there.
	bigEnv := envelope{id: "big", maxAttempts: 1, enqueuedAt: time.Now(), level: 1, payload: make([]byte, maxHandleElem+1)}
	require.NoError(t, p.Client().LPush(ctx, q.k.readyAt(1), bigEnv.encode()).Err())
	big := bigEnv.id
	qs, err := in.Queues(ctx, "", 10)
	require.NoError(t, err)
	require.Len(t, qs.Queues, 1)
	require.Equal(t, int64(7), qs.Queues[0].Ready)

	var got []string
	var handles = map[string]string{}
	cur := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		page, err := in.Jobs(ctx, q.name, StateReady, cur, 1)
		require.NoError(t, err)
		for _, j := range page.Jobs {
			got = append(got, fmt.Sprint(j.ID, "@", j.Priority))
			handles[j.ID] = j.Handle
		}
		if cur = page.Next; cur == "" {
			break
		}
	}
	require.Equal(t, []string{
		ids[4] + "@3", ids[1] + "@2", ids[3] + "@2", ids[5] + "@1", big + "@1", ids[0] + "@0", ids[2] + "@0",
	}, got, "in the order they are taken")

	info, err := q.Get(ctx, ids[3])
	require.NoError(t, err)
	require.Equal(t, StateReady, info.State)
	require.Equal(t, 2, info.Priority)
	require.NoError(t, q.Cancel(ctx, ids[3]))
	require.NoError(t, in.Delete(ctx, q.name, handles[ids[4]]))
	require.NoError(t, in.Delete(ctx, q.name, handles[big]), "by its position in level 1")
	for l, n := range map[int]int64{1: 1, 2: 1, 3: 0} {
		require.Equal(t, n, p.Client().LLen(ctx, q.k.readyAt(l)).Val(), "level %d", l)
	}
	_, err = q.Get(ctx, ids[4])
	require.ErrorIs(t, err, ErrJobNotFound)
}

// TestPriorityCostsNothingWithoutLevels: on a queue that holds no level
// job, the take runs the commands it ran before levels (one EXISTS, the
// LMOVEs), and a plain Enqueue one LPUSH and one ZADD.
func TestPriorityCostsNothingWithoutLevels(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "cost", Config{})
	ctx := context.Background()
	c := p.Client()
	ks := q.k.takeKeys(q.k.proc("c"))
	_, err := takeScript.Run(ctx, c, ks, 10).StringSlice() // loads the script
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	_, err = srv.Do(ctx, "CONFIG", "RESETSTAT")
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("y"))
	require.NoError(t, err)
	took, err := takeScript.Run(ctx, c, ks, 10).StringSlice()
	require.NoError(t, err)
	require.Len(t, took, 2)
	st, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	delete(st, "config|resetstat")
	delete(st, "info")
	require.Equal(t, map[string]int64{"evalsha": 2, "lpush": 1, "zadd": 1, "exists": 1, "lmove": 3}, st)
}
