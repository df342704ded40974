package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Room made by taking a waiting job out (Cancel, the Inspector's Delete)
// wakes the producers waiting for that room at once, by a message, as the
// take does: their recheck is an hour (startedParts), so only a message
// moves them. For every bound a producer can wait on (a full partition,
// MaxPartitions, MaxLen) and every place the job can wait in (the
// partitioned jobs, the delayed set, a ready list). TestCluster runs it on
// the 3-master cluster.
func TestRoomMadeWakesWaiters(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testRoomMadeWakes(t, np) })
	}
}

func testRoomMadeWakes(t *testing.T, np newPoolFunc) {
	cases := []struct {
		name   string
		cfg    Config
		job    []EnqueueOption // the job taken out, ID "x"
		waiter []EnqueueOption
		on     string // what the waiter waits for
		state  JobState
	}{
		{"partition full", Config{MaxPartitionLen: 1}, []EnqueueOption{Partition("a")}, []EnqueueOption{Partition("a")}, "a", StateReady},
		{"partition full, delayed", Config{MaxPartitionLen: 1}, []EnqueueOption{Partition("a"), Delay(time.Hour)}, []EnqueueOption{Partition("a")}, "a", StateDelayed},
		{"MaxPartitions", Config{MaxPartitions: 1}, []EnqueueOption{Partition("a")}, []EnqueueOption{Partition("b")}, roomNewPart, StateReady},
		{"MaxPartitions, delayed", Config{MaxPartitions: 1}, []EnqueueOption{Partition("a"), Delay(time.Hour)}, []EnqueueOption{Partition("b")}, roomNewPart, StateDelayed},
		{"MaxLen", Config{MaxLen: 1}, nil, nil, roomLen, StateReady},
		{"MaxLen, level", Config{MaxLen: 1}, []EnqueueOption{Priority(2)}, nil, roomLen, StateReady},
		{"MaxLen, delayed", Config{MaxLen: 1}, []EnqueueOption{Delay(time.Hour)}, nil, roomLen, StateDelayed},
		{"MaxLen, partitioned", Config{MaxLen: 1}, []EnqueueOption{Partition("a")}, []EnqueueOption{Partition("b")}, roomLen, StateReady},
	}
	takeOut := map[string]func(t *testing.T, q *Queue, state JobState){
		"cancel": func(t *testing.T, q *Queue, _ JobState) {
			require.NoError(t, q.Cancel(context.Background(), "x"))
		},
		"delete": func(t *testing.T, q *Queue, state JobState) {
			ctx := context.Background()
			in := mustInspector(t, q.p, q.cfg.Namespace)
			page, err := in.Jobs(ctx, q.name, state, "", 10)
			require.NoError(t, err)
			require.Len(t, page.Jobs, 1)
			require.Equal(t, "x", page.Jobs[0].ID)
			require.NoError(t, in.Delete(ctx, q.name, page.Jobs[0].Handle))
		},
	}
	for how, out := range takeOut {
		for _, c := range cases {
			t.Run(how+"/"+c.name, func(t *testing.T) {
				ctx := context.Background()
				q := startedParts(t, np, "made", c.cfg)
				_, err := q.Enqueue(ctx, []byte("x"), append([]EnqueueOption{ID("x")}, c.job...)...)
				require.NoError(t, err)
				done := make(chan enqueueResult, 1)
				go func() {
					id, err := q.Enqueue(ctx, []byte("w"), append([]EnqueueOption{WaitForRoom()}, c.waiter...)...)
					done <- enqueueResult{id, err}
				}()
				waitMarked(t, q, c.on)

				out(t, q, c.state)
				require.NoError(t, testutil.Recv(t, done, "the waiting producer").err)
				require.EqualValues(t, 1, q.room.Load().wakes.Load(), "woken by one message")
				require.Zero(t, q.room.Load().count())
				checkPartCounts(t, q)
			})
		}
	}
}

// The message wakes only the producers waiting for the room made: those of
// another full partition stay asleep, and a job taken out of a partition
// nobody waits for publishes nothing.
func TestRoomMadeWakesOnlyItsWaiters(t *testing.T) {
	ctx := context.Background()
	q := startedParts(t, miniPool, "madeonly", Config{MaxPartitionLen: 1})
	for _, p := range []string{"a", "b", "c"} {
		_, err := q.Enqueue(ctx, []byte(p), Partition(p), ID(p))
		require.NoError(t, err)
	}
	a := waitingPartEnqueue(q, ctx, "a2", "a")
	waitMarked(t, q, "a")
	b := waitingPartEnqueue(q, ctx, "b2", "b")
	testutil.Eventually(t, testutil.Wait, "the producer of b to wait, marked", func() bool {
		ok, err := q.p.Client().HExists(ctx, q.k.partWaiters(), "b").Result()
		return err == nil && ok && waitingOn(q, "b") == 1
	})

	require.NoError(t, q.Cancel(ctx, "c"))
	require.NoError(t, q.Cancel(ctx, "a"))
	require.NoError(t, testutil.Recv(t, a, "the producer of partition a").err)
	require.EqualValues(t, 1, q.room.Load().wakes.Load(), "one message, for a")
	require.Equal(t, 1, waitingOn(q, "b"), "b's producer still waits")

	require.NoError(t, q.Cancel(ctx, "b"))
	require.NoError(t, testutil.Recv(t, b, "the producer of partition b").err)
	require.EqualValues(t, 2, q.room.Load().wakes.Load())
	checkPartCounts(t, q)
}

// What waking costs a cancel while nobody waits: one EXISTS (the waiters
// key), plus one HMGET (the partition waiters) for a partitioned job, and
// no PUBLISH; a cancel that finds its job gone reads nothing more.
func TestRoomMadeCost(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "madecost", Config{MaxLen: 10, MaxPartitionLen: 10})
	ctx := context.Background()
	c := p.Client()
	stats := func(do func() int) (int, map[string]int64) {
		_, err := srv.Do(ctx, "CONFIG", "RESETSTAT")
		require.NoError(t, err)
		n := do()
		st, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return n, st
	}
	cancel := func(opts ...EnqueueOption) (took, gone map[string]int64) {
		require.NoError(t, c.FlushAll(ctx).Err())
		_, err := q.Enqueue(ctx, []byte("x"), append([]EnqueueOption{ID("x")}, opts...)...)
		require.NoError(t, err)
		loc, err := q.locate(ctx, "x")
		require.NoError(t, err)
		once := func() int {
			n, err := q.cancelWaiting(ctx, c, loc)
			require.NoError(t, err)
			return n
		}
		n, took := stats(once)
		require.Equal(t, 1, n)
		n, gone = stats(once)
		require.Zero(t, n, "gone already")
		return took, gone
	}
	for name, opts := range map[string][]EnqueueOption{
		"ready":                nil,
		"delayed":              {Delay(time.Hour)},
		"partitioned":          {Partition("a")},
		"partitioned, delayed": {Partition("a"), Delay(time.Hour)},
	} {
		t.Run(name, func(t *testing.T) {
			took, gone := cancel(opts...)
			hmget := int64(0)
			if len(opts) > 0 && name != "delayed" {
				hmget = 1
			}
			require.Equal(t, hmget, took["hmget"], "%v", took)
			require.Zero(t, took["publish"], "%v", took)
			// The producers waiting for the job (Queue.Wait), and those
			// waiting for room.
			require.Equal(t, int64(2), took["exists"], "%v", took)
			require.Zero(t, gone["exists"]+gone["hmget"], "%v", gone)
		})
	}
}
