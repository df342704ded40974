package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func mustInspector(t testing.TB, p *pool.Pool, ns string) *Inspector {
	t.Helper()
	in, err := NewInspector(p, ns)
	require.NoError(t, err)
	return in
}

// allPages pages through state with limit, calling between(page) after
// each page, and returns every job listed.
func allPages(t testing.TB, in *Inspector, queue string, state JobState, limit int, between func(page int)) []ListedJob {
	t.Helper()
	var out []ListedJob
	cur := ""
	for page := 0; ; page++ {
		require.Less(t, page, 100_000, "paging does not end")
		p, err := in.Jobs(context.Background(), queue, state, cur, limit)
		require.NoError(t, err)
		require.LessOrEqual(t, len(p.Jobs), limit)
		out = append(out, p.Jobs...)
		if between != nil {
			between(page)
		}
		if p.Next == "" {
			return out
		}
		require.NotEmpty(t, p.Jobs, "a page with a next cursor is never empty")
		cur = p.Next
	}
}

func idsOf(js []ListedJob) []string {
	ids := make([]string, len(js))
	for i, j := range js {
		ids[i] = j.ID
	}
	return ids
}

// Paging through 10,000 delayed jobs, many of one due time (a delayed
// batch shares its due time, so the cursor's binary search among equal
// scores is exercised), while jobs are added before and after the cursor:
// every job there at the start is listed exactly once, in due order.
// (2,000 on miniredis, which sorts the whole set on every ZRANGE.)
func TestInspectorDelayedPagesStableWhileJobsAreAdded(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			perBatch := 1000
			if name == "mini" {
				perBatch = 200
			}
			ctx := context.Background()
			p := np(t, pool.Config{})
			clock := testutil.NewClock()
			q := mustQueue(t, p, "paged", Config{Now: clock.Now, MaxBatch: 10_000})
			want := map[string]bool{}
			for b := range 10 {
				pays := make([][]byte, perBatch)
				for i := range pays {
					pays[i] = []byte(fmt.Sprint(b, "-", i))
				}
				ids, err := q.EnqueueBatch(ctx, pays, Delay(time.Duration(1+b%4)*time.Hour)) // 4 due times
				require.NoError(t, err)
				for _, id := range ids {
					want[id] = true
				}
			}
			in := mustInspector(t, p, "")
			added := 0
			got := allPages(t, in, "paged", StateDelayed, perBatch/3, func(page int) {
				// New jobs at every due time of the set, and before and
				// after all of them.
				for _, d := range []time.Duration{time.Minute, time.Hour, 2 * time.Hour, 3 * time.Hour, 4 * time.Hour, 9 * time.Hour} {
					_, err := q.Enqueue(ctx, []byte("late"), Delay(d))
					require.NoError(t, err)
					added++
				}
			})
			seen := map[string]int{}
			for i, j := range got {
				seen[j.ID]++
				require.Equal(t, StateDelayed, j.State)
				if i > 0 {
					require.False(t, j.Due.Before(got[i-1].Due), "listed in due order")
				}
			}
			for id := range want {
				require.Equal(t, 1, seen[id], "job %s listed once", id)
			}
			for id, n := range seen {
				require.Equal(t, 1, n, "job %s listed %d times", id, n)
			}
			require.GreaterOrEqual(t, len(got), len(want))
			require.LessOrEqual(t, len(got), len(want)+added)
		})
	}
}

// Ready jobs page in the order they will run; payloads are previews
// unless asked, and payloads kept apart are not read unless asked.
func TestInspectorReadyPages(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			q := mustQueue(t, p, "ready", Config{})
			var ids []string
			for i := range 25 {
				id, err := q.Enqueue(ctx, []byte(strconv.Itoa(i)))
				require.NoError(t, err)
				ids = append(ids, id)
			}
			big := bytes.Repeat([]byte("b"), 3000)   // inline, over the preview
			apart := bytes.Repeat([]byte("a"), 9000) // kept apart
			bigID, err := q.Enqueue(ctx, big)
			require.NoError(t, err)
			apartID, err := q.Enqueue(ctx, apart)
			require.NoError(t, err)
			ids = append(ids, bigID, apartID)
			// A wake marker at the tail is not a job.
			require.NoError(t, p.Client().RPush(ctx, q.k.ready, wakeMarker).Err())

			in := mustInspector(t, p, "")
			got := allPages(t, in, "ready", StateReady, 10, nil)
			require.Equal(t, ids, idsOf(got), "next to run first")
			b, a := got[25], got[26]
			require.Equal(t, PreviewBytes, len(b.Payload))
			require.True(t, b.Truncated)
			require.Equal(t, 3000, b.PayloadSize)
			require.Empty(t, a.Payload)
			require.True(t, a.PayloadApart)
			require.Equal(t, 9000, a.PayloadSize)
			require.Equal(t, []byte("0"), got[0].Payload)

			page, err := in.Jobs(ctx, "ready", StateReady, "", 1000, WithPayloads())
			require.NoError(t, err)
			require.Len(t, page.Jobs, 27)
			require.Empty(t, page.Next)
			require.Equal(t, big, page.Jobs[25].Payload)
			require.Equal(t, apart, page.Jobs[26].Payload)
			require.False(t, page.Jobs[26].PayloadApart)
		})
	}
}

// The jobs two consumers hold are listed with their consumer, over pages;
// Consumers shows both with their queues and in-flight counts.
func TestInspectorRunningJobsOfTwoConsumers(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			g := group(t)
			q := mustQueue(t, p, "held", Config{})
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			h := func(ctx context.Context, j *Job) error {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			}
			w1 := startWorker(t, g, q, h, WorkerConfig{Concurrency: 3}, ConsumerConfig{ConsumerID: "c-one"})
			w2 := startWorker(t, g, q, h, WorkerConfig{Concurrency: 3}, ConsumerConfig{ConsumerID: "c-two"})
			for i := range 6 {
				_, err := q.Enqueue(ctx, []byte(strconv.Itoa(i)))
				require.NoError(t, err)
			}
			testutil.Eventually(t, testutil.Wait, "both consumers hold 3 jobs", func() bool {
				return w1.Stats().Busy == 3 && w2.Stats().Busy == 3
			})
			in := mustInspector(t, p, "")
			got := allPages(t, in, "held", StateRunning, 2, nil)
			require.Len(t, got, 6)
			per := map[string]int{}
			for _, j := range got {
				per[j.Consumer]++
				require.Equal(t, StateRunning, j.State)
			}
			require.Equal(t, map[string]int{"c-one": 3, "c-two": 3}, per)
			// Consumer order: every job of c-one first.
			require.Equal(t, "c-one", got[0].Consumer)
			require.Equal(t, "c-two", got[5].Consumer)

			// Neither a dead consumer whose record is still there nor a
			// due announcement in the heartbeat set is a live consumer.
			require.NoError(t, p.Client().HSet(ctx, consumerQueuesKey("bq"), "ghost", "held").Err())
			require.NoError(t, p.Client().ZAdd(ctx, heartbeatKey("bq"),
				redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: "ghost"},
				redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: dueMember(q.k.tag)}).Err())
			cs, err := in.Consumers(ctx)
			require.NoError(t, err)
			require.Len(t, cs, 2)
			require.Equal(t, "c-one", cs[0].ID)
			require.Equal(t, []string{"held"}, cs[0].Queues)
			require.Equal(t, map[string]int64{"held": 3}, cs[1].InFlight)

			qs, err := in.Queues(ctx, "", 10)
			require.NoError(t, err)
			require.Len(t, qs.Queues, 1)
			require.Equal(t, int64(6), qs.Queues[0].InFlight)
			require.Equal(t, 2, qs.Queues[0].Consumers)
		})
	}
}

// addDead writes n dead letters to q as the workers do (deadScript), at the
// clock's time.
func addDead(t testing.TB, q *Queue, n int, payload func(i int) []byte) []string {
	t.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	for start := 0; start < n; start += 500 {
		pipe := q.p.Client().Pipeline()
		for i := start; i < min(n, start+500); i++ {
			pr, err := q.prepare(payload(i), nil)
			require.NoError(t, err)
			if pr.ref != "" {
				pipe.HSet(ctx, q.k.payloads, pr.ref, pr.payload)
			}
			ks, args := q.deadAddArgs(pr.elem, deadLetter{id: pr.id, reason: "boom " + strconv.Itoa(i), attempts: 1})
			deadScript.Eval(ctx, pipe, ks, args...)
			ids[i] = pr.id
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
	}
	return ids
}

// Dead letters page newest first with a stable cursor, many of them dying
// in the same millisecond, while more die between pages.
func TestInspectorDeadPagesStable(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			clock := testutil.NewClock()
			q := mustQueue(t, p, "graveyard", Config{Now: clock.Now})
			var want []string
			for range 5 {
				want = append(want, addDead(t, q, 60, func(i int) []byte { return []byte("p" + strconv.Itoa(i)) })...)
				clock.Advance(time.Millisecond)
			}
			// One with its payload kept apart.
			apart := addDead(t, q, 1, func(int) []byte { return bytes.Repeat([]byte("x"), 5000) })
			in := mustInspector(t, p, "")
			got := allPages(t, in, "graveyard", StateDead, 7, func(int) {
				addDead(t, q, 2, func(int) []byte { return []byte("later") })
			})
			require.Equal(t, apart[0], got[0].ID, "newest first")
			require.True(t, got[0].PayloadApart)
			require.Equal(t, 5000, got[0].PayloadSize)
			require.Empty(t, got[0].Payload)
			seen := map[string]int{}
			for i, j := range got {
				seen[j.ID]++
				require.Equal(t, StateDead, j.State)
				require.Contains(t, j.LastError, "boom")
				if i > 0 {
					require.False(t, j.DiedAt.After(got[i-1].DiedAt), "newest first")
				}
			}
			for _, id := range want {
				require.Equal(t, 1, seen[id], "dead letter %s listed once", id)
			}
			require.Len(t, got, len(want)+1, "the later ones died after the first page's cursor: not listed")
		})
	}
}

// Bad limits, cursors, states and names fail with ErrInvalidArgument
// naming the value; 1 and MaxPageLimit work.
func TestInspectorArgumentEdges(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "edges", Config{})
	for range 3 {
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
	}
	in := mustInspector(t, p, "")
	for _, limit := range []int{0, -1, MaxPageLimit + 1, 1 << 40} {
		_, err := in.Jobs(ctx, "edges", StateReady, "", limit)
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, strconv.Itoa(limit))
		_, err = in.Queues(ctx, "", limit)
		require.ErrorIs(t, err, ErrInvalidArgument)
	}
	for _, limit := range []int{1, MaxPageLimit} {
		page, err := in.Jobs(ctx, "edges", StateReady, "", limit)
		require.NoError(t, err)
		require.Len(t, page.Jobs, min(limit, 3))
		require.Equal(t, limit == 1, page.Next != "")
	}
	page, err := in.Jobs(ctx, "edges", StateDelayed, "", 1)
	require.NoError(t, err)
	require.Empty(t, page.Jobs)
	require.Empty(t, page.Next)
	readyPage, err := in.Jobs(ctx, "edges", StateReady, "", 1)
	require.NoError(t, err)
	for _, c := range []struct {
		state  JobState
		cursor string
	}{
		{StateReady, "%%%"},
		{StateReady, encodeCursor(StateReady, "-5")},
		{StateReady, encodeCursor(StateReady, "x")},
		{StateDelayed, readyPage.Next}, // another state's cursor
		{StateDead, encodeCursor(StateDead, "notanumber", "x")},
	} {
		_, err := in.Jobs(ctx, "edges", c.state, c.cursor, 10)
		require.ErrorIs(t, err, ErrInvalidArgument, "cursor %q", c.cursor)
	}
	for _, st := range []JobState{StateDone, "", "weird"} {
		_, err := in.Jobs(ctx, "edges", st, "", 10)
		require.ErrorIs(t, err, ErrInvalidArgument)
	}
	for _, name := range []string{"", "a b", "{x}"} {
		_, err := in.Jobs(ctx, name, StateReady, "", 10)
		require.ErrorIs(t, err, ErrInvalidArgument)
	}
	_, err = NewInspector(p, "a:b")
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewInspector(nil, "")
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, h := range []string{"", "%%", encodeHandle(StateRunning, "x"), encodeHandle(StateReady, "zz", "1")} {
		require.ErrorIs(t, in.Delete(ctx, "edges", h), ErrInvalidArgument, "handle %q", h)
	}
}

// Delete removes a ready, a delayed and a dead job only while it is still
// there, with its payload kept apart and its ID; a second Delete of the
// same handle finds it gone.
func TestInspectorDelete(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			q := mustQueue(t, p, "del", Config{})
			in := mustInspector(t, p, "")
			big := bytes.Repeat([]byte("z"), 20_000)
			_, err := q.Enqueue(ctx, []byte("keep"))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, big, ID("order-1"))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte("later"), Delay(time.Hour), ID("order-2"))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte("later2"), Delay(time.Hour))
			require.NoError(t, err)
			addDead(t, q, 2, func(int) []byte { return []byte("dead") })

			ready, err := in.Jobs(ctx, "del", StateReady, "", 10)
			require.NoError(t, err)
			require.Len(t, ready.Jobs, 2)
			require.Equal(t, "order-1", ready.Jobs[1].ID)
			h := ready.Jobs[1].Handle
			require.NoError(t, in.Delete(ctx, "del", h))
			require.ErrorIs(t, in.Delete(ctx, "del", h), ErrJobGone)
			n, err := p.Client().HLen(ctx, q.k.payloads).Result()
			require.NoError(t, err)
			require.Zero(t, n, "its payload kept apart is deleted")
			_, err = q.Enqueue(ctx, []byte("again"), ID("order-1"))
			require.NoError(t, err, "its ID is free")

			delayed, err := in.Jobs(ctx, "del", StateDelayed, "", 10)
			require.NoError(t, err)
			require.Len(t, delayed.Jobs, 2)
			var d ListedJob
			for _, j := range delayed.Jobs {
				if j.ID == "order-2" {
					d = j
				}
			}
			require.NoError(t, in.Delete(ctx, "del", d.Handle))
			require.ErrorIs(t, in.Delete(ctx, "del", d.Handle), ErrJobGone)
			_, err = q.Enqueue(ctx, []byte("again"), ID("order-2"))
			require.NoError(t, err)

			dead, err := in.Jobs(ctx, "del", StateDead, "", 10)
			require.NoError(t, err)
			require.Len(t, dead.Jobs, 2)
			require.NoError(t, in.Delete(ctx, "del", dead.Jobs[0].Handle))
			require.ErrorIs(t, in.Delete(ctx, "del", dead.Jobs[0].Handle), ErrJobGone)
			left, err := q.Dead(ctx, 0, 10)
			require.NoError(t, err)
			require.Len(t, left, 1)
			require.Equal(t, dead.Jobs[1].ID, left[0].ID)

			// Requeue and Purge through the Inspector.
			moved, err := in.Requeue(ctx, "del", dead.Jobs[1].ID)
			require.NoError(t, err)
			require.Equal(t, 1, moved)
			addDead(t, q, 3, func(int) []byte { return []byte("dead") })
			purged, err := in.Purge(ctx, "del")
			require.NoError(t, err)
			require.Equal(t, 3, purged)
		})
	}
}

// A ready job over 16 KiB (Durable keeps its payload in the element) is
// deleted by position and digest: refused once another job is there.
func TestInspectorDeleteLargeReadyByPosition(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "durable", Config{})
	env := envelope{id: "big", maxAttempts: 1, payload: bytes.Repeat([]byte("d"), 20_000)}
	require.NoError(t, p.Client().LPush(ctx, q.k.ready, env.encode()).Err())
	in := mustInspector(t, p, "")
	page, err := in.Jobs(ctx, "durable", StateReady, "", 10)
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	h := page.Jobs[0].Handle
	require.Less(t, len(h), 200, "the handle does not carry the element")
	// Another job is taken in front of it: the position now names another.
	other := envelope{id: "other", maxAttempts: 1, payload: []byte("o")}
	require.NoError(t, p.Client().RPush(ctx, q.k.ready, other.encode()).Err())
	require.ErrorIs(t, in.Delete(ctx, "durable", h), ErrJobGone)
	require.NoError(t, p.Client().RPop(ctx, q.k.ready).Err())
	require.NoError(t, in.Delete(ctx, "durable", h))
	n, err := p.Client().LLen(ctx, q.k.ready).Result()
	require.NoError(t, err)
	require.Zero(t, n)
}

// Queues pages through the registry by name with each queue's counts; a
// queue not seen for the retention is trimmed.
func TestInspectorQueues(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			clock := testutil.NewClock()
			var names []string
			for i := range 25 {
				n := fmt.Sprintf("q%02d", i)
				names = append(names, n)
				q := mustQueue(t, p, n, Config{Now: clock.Now})
				for range i % 3 {
					_, err := q.Enqueue(ctx, []byte("x"))
					require.NoError(t, err)
				}
				_, err := q.Enqueue(ctx, []byte("x"), Delay(time.Hour))
				require.NoError(t, err)
			}
			other := mustQueue(t, p, "elsewhere", Config{Namespace: "other"})
			_, err := other.Enqueue(ctx, []byte("x"))
			require.NoError(t, err)

			in := mustInspector(t, p, "")
			var got []QueueInfo
			cur := ""
			for {
				page, err := in.Queues(ctx, cur, 10)
				require.NoError(t, err)
				got = append(got, page.Queues...)
				if page.Next == "" {
					break
				}
				cur = page.Next
			}
			require.Len(t, got, 25)
			for i, qi := range got {
				require.Equal(t, names[i], qi.Name)
				require.Equal(t, int64(i%3), qi.Ready)
				require.Equal(t, int64(1), qi.Delayed)
				require.Equal(t, testutil.T0, qi.LastSeen.UTC())
			}

			// 31 days later, one queue is seen again: the rest are trimmed
			// by the next write.
			clock.Advance(registryRetention + 24*time.Hour)
			_, err = mustQueue(t, p, "q07", Config{Now: clock.Now}).Enqueue(ctx, []byte("x"))
			require.NoError(t, err)
			page, err := in.Queues(ctx, "", 100)
			require.NoError(t, err)
			require.Len(t, page.Queues, 1)
			require.Equal(t, "q07", page.Queues[0].Name)
		})
	}
}

// A producer notes its queue once, not per job: the registry costs no
// command per enqueue.
func TestRegistryCostsNothingPerJob(t *testing.T) {
	ctx := context.Background()
	var calls countingHook
	p := miniPool(t, pool.Config{Hooks: []redis.Hook{&calls}})
	q := mustQueue(t, p, "cheap", Config{})
	_, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	before := calls.cmds.Load()
	for range 100 {
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
	}
	require.Equal(t, int64(100), calls.cmds.Load()-before, "one LPUSH per job, nothing else")
}

// The registry holds at most registryMax names, dropping the least
// recently seen.
func TestRegistryIsCapped(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	now := testutil.T0
	for start := 0; start < registryMax+50; start += 1000 {
		pipe := p.Client().Pipeline()
		var names []string
		for i := start; i < min(start+1000, registryMax+50); i++ {
			names = append(names, fmt.Sprintf("q%06d", i))
		}
		register(ctx, pipe, "bq", now, names...)
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
		now = now.Add(time.Second)
	}
	n, err := p.Client().ZCard(ctx, queuesKey("bq")).Result()
	require.NoError(t, err)
	require.Equal(t, int64(registryMax), n)
	first, err := p.Client().ZRangeByLex(ctx, queuesKey("bq"), &redis.ZRangeBy{Min: "-", Max: "+", Count: 1}).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"q000050"}, first, "the least recently seen went first")
}

// countingHook counts the commands a client sends (pipelined ones
// included), the round trips, and the elements of their replies.
type countingHook struct {
	cmds, trips, elems atomic.Int64
}

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.cmds.Add(1)
		h.trips.Add(1)
		h.elems.Add(replyElems(cmd))
		return err
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.trips.Add(1)
		for _, c := range cmds {
			if n := c.Name(); n == "multi" || n == "exec" {
				continue
			}
			h.cmds.Add(1)
			h.elems.Add(replyElems(c))
		}
		return err
	}
}

// replyElems counts the elements of a reply: 1 for a scalar, the length of
// an array (nested arrays counted through).
func replyElems(c redis.Cmder) int64 {
	switch x := c.(type) {
	case *redis.StringSliceCmd:
		return int64(len(x.Val()))
	case *redis.ZSliceCmd:
		return int64(2 * len(x.Val()))
	case *redis.SliceCmd:
		return int64(len(x.Val()))
	case *redis.IntSliceCmd:
		return int64(len(x.Val()))
	case *redis.Cmd:
		return countAny(x.Val())
	}
	return 1
}

func countAny(v any) int64 {
	if s, ok := v.([]any); ok {
		n := int64(0)
		for _, e := range s {
			n += countAny(e)
		}
		return n
	}
	return 1
}

// testInspectorAcrossSlots runs the Inspector on queues spread over every
// master of a cluster (its registry lives in the namespace's slot): the
// listings, Delete, Consumers, and a worker's hooks and last error.
func testInspectorAcrossSlots(t *testing.T, c *redistest.RedisCluster, np newPoolFunc) {
	ctx := context.Background()
	names := c.OnEveryMaster(func(i int) string { return fmt.Sprint("insp", i) }, func(n string) string { return newKeys("bq", n).ready })
	p := np(t, pool.Config{})
	for _, n := range names {
		q := mustQueue(t, p, n, Config{})
		for i := range 5 {
			_, err := q.Enqueue(ctx, []byte(strconv.Itoa(i)))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte(strconv.Itoa(i)), Delay(time.Hour))
			require.NoError(t, err)
		}
		addDead(t, q, 3, func(int) []byte { return []byte("d") })
	}
	in := mustInspector(t, p, "")
	var got []QueueInfo
	cur := ""
	for {
		page, err := in.Queues(ctx, cur, 2)
		require.NoError(t, err)
		got = append(got, page.Queues...)
		if page.Next == "" {
			break
		}
		cur = page.Next
	}
	require.Len(t, got, len(names))
	for _, qi := range got {
		require.Equal(t, QueueInfo{Name: qi.Name, LastSeen: qi.LastSeen, Ready: 5, Delayed: 5, Dead: 3}, qi)
	}
	for _, n := range names {
		for _, st := range []JobState{StateReady, StateDelayed, StateDead} {
			js := allPages(t, in, n, st, 2, nil)
			require.NotEmpty(t, js)
			require.NoError(t, in.Delete(ctx, n, js[0].Handle), "%s %s", n, st)
			require.ErrorIs(t, in.Delete(ctx, n, js[0].Handle), ErrJobGone)
		}
	}

	g := group(t)
	q := mustQueue(t, p, names[0], Config{})
	events := make(chan Outcome, 100)
	hook := func(o Outcome) { events <- o }
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		if j.Attempt == 1 {
			return errors.New("first try")
		}
		return nil
	}, WorkerConfig{OnDone: hook, OnRetry: hook, Backoff: func(int, error) time.Duration { return time.Millisecond }},
		ConsumerConfig{ConsumerID: "cluster-consumer"})
	seen := 0
	for seen < 8 { // the 4 ready jobs left: a retry and a success each
		o := recv(t, events, testutil.Wait, "hooks")
		seen++
		if o.Err != nil {
			continue
		}
		n, err := p.Client().Exists(ctx, q.k.lastErr(o.Job.ID)).Result()
		require.NoError(t, err)
		require.Zero(t, n, "the last error goes with success")
	}
	cs, err := in.Consumers(ctx)
	require.NoError(t, err)
	require.Len(t, cs, 1)
	require.Equal(t, []string{names[0]}, cs[0].Queues)
}

// A consumer's heartbeat notes its queues again every 15 minutes, so a
// queue consumed for months stays listed; a queue with no live consumer
// nor producer ages out.
func TestRegistryRefreshedByTheHeartbeat(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	g := group(t)
	clock := testutil.NewClock()
	q := mustQueue(t, p, "long-lived", Config{Now: clock.Now})
	startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{},
		ConsumerConfig{ConsumerID: "steady", HeartbeatInterval: 100 * time.Millisecond, Now: clock.Now})
	seen := func() float64 {
		v, err := p.Client().ZScore(ctx, queueSeenKey("bq"), "long-lived").Result()
		if err != nil {
			return 0
		}
		return v
	}
	require.Equal(t, float64(testutil.T0.UnixMilli()), seen(), "noted at Start")
	// The first beat trims (nothing to note: Start did); 15 minutes later
	// the next trim notes again.
	clock.Advance(time.Millisecond)
	testutil.Eventually(t, testutil.Wait, "a first heartbeat", func() bool {
		v, _ := p.Client().ZScore(ctx, heartbeatKey("bq"), "steady").Result()
		return v == float64(clock.Now().Add(200*time.Millisecond).UnixMilli())
	})
	clock.Advance(heartbeatRetention/4 + time.Second)
	testutil.Eventually(t, testutil.Wait, "the refresh", func() bool {
		return seen() == float64(clock.Now().UnixMilli())
	})
	v, err := p.Client().HGet(ctx, consumerQueuesKey("bq"), "steady").Result()
	require.NoError(t, err)
	require.Equal(t, "long-lived", v)
}

// The Inspector's Get and Cancel are the Queue's, reached by name.
func TestInspectorGetAndCancel(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "byid", Config{})
	in := mustInspector(t, p, "")
	id, err := q.Enqueue(ctx, []byte("x"), Delay(time.Hour))
	require.NoError(t, err)
	info, err := in.Get(ctx, "byid", id)
	require.NoError(t, err)
	require.Equal(t, StateDelayed, info.State)
	require.Equal(t, []byte("x"), info.Payload)
	require.NoError(t, in.Cancel(ctx, "byid", id))
	info, err = in.Get(ctx, "byid", id)
	require.NoError(t, err)
	require.Equal(t, StateCancelled, info.State)
	_, err = in.Get(ctx, "byid", "nope")
	require.ErrorIs(t, err, ErrJobNotFound)
	_, err = in.Get(ctx, "bad{name}", id)
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorIs(t, in.Cancel(ctx, "", id), ErrInvalidArgument)
}
