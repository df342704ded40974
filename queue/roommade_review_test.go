package queue

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Review of the room made by Cancel and the Inspector's Delete
// (roomMadeLua) where it is easiest to get wrong: at maxmemory, after
// SCRIPT FLUSH, for a debounced job, for a partition held at its
// concurrency limit. They passed on main 35faddc (review coverage).

// startedOn is startedParts on a given pool.
func startedOn(t *testing.T, p *pool.Pool, name string, cfg Config) *Queue {
	t.Helper()
	q := mustQueue(t, p, name, cfg)
	q.recheck = time.Hour
	require.NoError(t, q.Start(group(t)))
	testutil.Eventually(t, testutil.Wait, "the room subscriber", func() bool { return q.room.Load().subscribed.Load() })
	return q
}

// A cancel at maxmemory (noeviction) still takes the job out and wakes the
// producer waiting for its partition's room: its script, without flags,
// removes first (not deny-oom), and then may write; EXISTS, HMGET and
// PUBLISH are never refused.
func TestRoomMadeReviewCancelAtMaxMemory(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := startedOn(t, p, "madeoom", Config{MaxPartitionLen: 1})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("x"), Partition("a"), ID("x"))
	require.NoError(t, err)
	w := waitingPartEnqueue(q, ctx, "w", "a")
	waitMarked(t, q, "a")
	fillToLimit(t, srv, q)
	for i := 0; ; i++ {
		_, err = q.Enqueue(ctx, []byte("y"))
		if isOOM(err) {
			break
		}
		require.NoError(t, err)
		require.Less(t, i, 100_000)
	}
	require.NoError(t, q.Cancel(ctx, "x"), "at the limit")
	// Woken, it tries again: it fits in what the cancel freed, or Redis
	// refuses it for memory.
	if r := testutil.Recv(t, w, "the waiting producer"); r.err != nil {
		require.True(t, isOOM(r.err), "%v", r.err)
	}
	require.EqualValues(t, 1, q.room.Load().wakes.Load(), "woken by the cancel's message")
	_, err = srv.Do(ctx, "CONFIG", "SET", "maxmemory", "0")
	require.NoError(t, err)
	checkPartCounts(t, q)
}

// After SCRIPT FLUSH, Cancel and Delete load their scripts again and wake.
func TestRoomMadeReviewScriptFlush(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := startedOn(t, p, "madeflush", Config{MaxPartitions: 1})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("x"), Partition("a"), ID("x"))
	require.NoError(t, err)
	w := waitingPartEnqueue(q, ctx, "w", "b")
	waitMarked(t, q, roomNewPart)
	_, err = srv.Do(ctx, "SCRIPT", "FLUSH")
	require.NoError(t, err)
	require.NoError(t, q.Cancel(ctx, "x"))
	require.NoError(t, testutil.Recv(t, w, "the waiting producer").err)

	w = waitingPartEnqueue(q, ctx, "w2", "c")
	waitMarked(t, q, roomNewPart)
	_, err = srv.Do(ctx, "SCRIPT", "FLUSH")
	require.NoError(t, err)
	in := mustInspector(t, p, q.cfg.Namespace)
	page, err := in.Jobs(ctx, q.name, StateReady, "", 10)
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	require.NoError(t, in.Delete(ctx, q.name, page.Jobs[0].Handle))
	require.NoError(t, testutil.Recv(t, w, "the second waiting producer").err)
	require.EqualValues(t, 2, q.room.Load().wakes.Load())
	checkPartCounts(t, q)
}

// A debounced job of a full partition, cancelled, wakes its partition's
// producer.
func TestRoomMadeReviewDebounced(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			q := startedParts(t, np, "madedeb", Config{MaxPartitionLen: 1, MaxPartitions: 1})
			ctx := context.Background()
			_, err := q.Enqueue(ctx, []byte("x"), Partition("a"), ID("x"), Debounce(), Delay(time.Hour))
			require.NoError(t, err)
			wa := waitingPartEnqueue(q, ctx, "wa", "a")
			waitMarked(t, q, "a")
			wb := waitingPartEnqueue(q, ctx, "wb", "b")
			waitMarked(t, q, roomNewPart)
			require.NoError(t, q.Cancel(ctx, "x"))
			// a's producer and b's are both woken: one of them gets the
			// only partition, the other waits again.
			var got enqueueResult
			select {
			case got = <-wa:
			case got = <-wb:
			case <-time.After(testutil.Wait):
				t.Fatal("nobody woken")
			}
			require.NoError(t, got.err)
			checkPartCounts(t, q)
		})
	}
}

// A partition held at its concurrency limit (phold): the cancel of its
// last due job (a delayed one left) wakes its producer; the delete of the
// delayed one, its last, wakes the producer waiting for a new partition.
func TestRoomMadeReviewHeld(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			q := startedParts(t, np, "madeheld", Config{MaxPartitionLen: 3, MaxPartitions: 1})
			ctx := context.Background()
			for _, id := range []string{"a1", "a2"} {
				_, err := q.Enqueue(ctx, []byte(id), Partition("a"), ID(id))
				require.NoError(t, err)
			}
			_, err := q.Enqueue(ctx, []byte("a3"), Partition("a"), ID("a3"), Delay(time.Hour))
			require.NoError(t, err)
			rdb := q.p.Client().(*redis.Client)
			l := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("c1", "tok"), pconc: 1}
			_, got := l.take(10, 0)
			require.Len(t, slices.DeleteFunc(got, func(e string) bool { return e == wakeMarker }), 1)
			held, err := rdb.ZRange(ctx, q.k.partHold(), 0, -1).Result()
			require.NoError(t, err)
			require.Equal(t, []string{"a"}, held)
			checkPartCounts(t, q)
			// a: a2 due (held), a3 delayed; fill a to 3 again.
			_, err = q.Enqueue(ctx, []byte("a4"), Partition("a"), ID("a4"))
			require.NoError(t, err)
			wa := waitingPartEnqueue(q, ctx, "wa", "a")
			waitMarked(t, q, "a")
			wb := waitingPartEnqueue(q, ctx, "wb", "b")
			testutil.Eventually(t, testutil.Wait, "b's producer", func() bool {
				ok, err := rdb.HExists(ctx, q.k.partWaiters(), roomNewPart).Result()
				return err == nil && ok && waitingOn(q, roomNewPart) == 1
			})
			require.NoError(t, q.Cancel(ctx, "a2"))
			require.NoError(t, testutil.Recv(t, wa, "a's producer").err)
			require.EqualValues(t, 1, q.room.Load().wakes.Load())
			require.Equal(t, 1, waitingOn(q, roomNewPart))
			checkPartCounts(t, q)
			for _, id := range []string{"a3", "a4"} {
				require.NoError(t, q.Cancel(ctx, id))
			}
			require.Equal(t, 1, waitingOn(q, roomNewPart), "a has wa's job")
			in := mustInspector(t, q.p, q.cfg.Namespace)
			page, err := in.Jobs(ctx, q.name, StateReady, "", 10)
			require.NoError(t, err)
			require.Len(t, page.Jobs, 1)
			require.NoError(t, in.Delete(ctx, q.name, page.Jobs[0].Handle))
			require.NoError(t, testutil.Recv(t, wb, "b's producer").err)
			checkPartCounts(t, q)
		})
	}
}

// A partitioned job at a priority level (in its partition's band),
// cancelled or deleted, wakes its partition's producer.
func TestRoomMadeReviewPartitionLevel(t *testing.T) {
	for _, how := range []string{"cancel", "delete"} {
		t.Run(how, func(t *testing.T) {
			q := startedParts(t, miniPool, "madelevel", Config{MaxPartitionLen: 2})
			ctx := context.Background()
			_, err := q.Enqueue(ctx, []byte("x"), Partition("a"), ID("x"), Priority(2))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte("y"), Partition("a"), ID("y"))
			require.NoError(t, err)
			w := waitingPartEnqueue(q, ctx, "w", "a")
			waitMarked(t, q, "a")
			if how == "cancel" {
				require.NoError(t, q.Cancel(ctx, "x"))
			} else {
				in := mustInspector(t, q.p, q.cfg.Namespace)
				page, err := in.Jobs(ctx, q.name, StateReady, "", 10)
				require.NoError(t, err)
				i := slices.IndexFunc(page.Jobs, func(j ListedJob) bool { return j.ID == "x" })
				require.GreaterOrEqual(t, i, 0)
				require.NoError(t, in.Delete(ctx, q.name, page.Jobs[i].Handle))
			}
			require.NoError(t, testutil.Recv(t, w, "a's producer").err)
			require.EqualValues(t, 1, q.room.Load().wakes.Load())
			checkPartCounts(t, q)
		})
	}
}
