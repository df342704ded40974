package queue

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// TestLimitTakeAtLimitWithLevelJobs: when the only jobs waiting are in the
// level lists (jobs enqueued with Priority), a take the concurrency limit
// stops is stopped by the limit, not by an empty queue: it records its
// consumer in the waiting set (so a release that leaves room under its
// tighter limit rings for it), and a take the rate stops answers the wait
// to the next allowed instant (so the fetcher sleeps to it, rather than
// waiting for a ring nobody sends). Before the fix the take's plain-list
// loop looked only at the ready list at the limit, found it empty and
// stopped as 'empty'.
func TestLimitTakeAtLimitWithLevelJobs(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			k := newKeys("bq", "limlevels")
			for _, e := range []string{"a", "b", "c", "d"} {
				require.NoError(t, rdb.LPush(ctx, k.levels[0], e).Err())
			}
			waiting := func() []redis.Z {
				z, err := rdb.ZRangeWithScores(ctx, k.limitWaiting(), 0, -1).Result()
				require.NoError(t, err)
				return z
			}
			wide := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("wide", "t1"), conc: 5}
			tight := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("tight", "t2"), conc: 1}
			_, got := wide.take(2, 0)
			require.Equal(t, []string{"a", "b"}, got)
			_, got = tight.take(1, 0)
			require.Empty(t, got, "2 held: tight's limit is full")
			assert.Equal(t, []redis.Z{{Score: 1, Member: tight.prefix}}, waiting(), "stopped by the limit with level jobs waiting: it waits for a slot")

			// The rate: one job per hour, burst 1, spent by the first take.
			rk := newKeys("bq", "limlevelsrate")
			for _, e := range []string{"x", "y"} {
				require.NoError(t, rdb.LPush(ctx, rk.levels[2], e).Err())
			}
			rated := limitTake{t: t, rdb: rdb, k: rk, prefix: slotPrefix("r", "t3"), scale: 1, step: 3_600_000_000, burst: 1}
			_, got = rated.take(1, 1_000_000)
			require.Equal(t, []string{"x"}, got)
			wait, got := rated.take(1, 1_000_001)
			require.Empty(t, got)
			require.Positive(t, wait, "stopped by the rate with a level job waiting: the wait to the next allowed instant")
		})
	}
}

// TestLimitRateWithPriorityJobs: a rate-limited queue whose jobs are
// enqueued with Priority runs them all, one per rate interval: the take
// the rate stops answers its wait, and the fetcher sleeps to it. Before the
// fix the take stopped as on an empty queue, and the fetcher waited for a
// ring that only the next enqueue would send.
func TestLimitRateWithPriorityJobs(t *testing.T) {
	addr := redistest.Server(t).Addr()
	p := mustPool(t, pool.Config{Addrs: []string{addr}})
	q := mustQueue(t, p, "lim-rate-prio", Config{})
	ctx := context.Background()
	ran := make(chan string, 3)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		ran <- string(j.Payload)
		return nil
	}, WorkerConfig{Concurrency: 3, Limit: Limit{Rate: 1, Per: 200 * time.Millisecond}})
	for _, s := range []string{"a", "b", "c"} {
		_, err := q.Enqueue(ctx, []byte(s), Priority(1))
		require.NoError(t, err)
	}
	got := map[string]bool{}
	for range 3 {
		got[recv(t, ran, 5*time.Second, "every Priority job to run within the rate")] = true
	}
	require.Len(t, got, 3)
}

// TestLimitClosedWhileWaitingLeavesNoEntry: a worker refused by the
// concurrency limit is recorded in the waiting set; its Close removes it
// (the drain's release), so a closed worker leaves no entry behind.
func TestLimitClosedWhileWaitingLeavesNoEntry(t *testing.T) {
	addr := redistest.Server(t).Addr()
	pA := mustPool(t, pool.Config{Addrs: []string{addr}})
	pB := mustPool(t, pool.Config{Addrs: []string{addr}})
	qA := mustQueue(t, pA, "lim-close-wait", Config{})
	qB := mustQueue(t, pB, "lim-close-wait", Config{})
	ctx := context.Background()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hold := func(ctx context.Context, j *Job) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	startWorker(t, group(t), qA, hold, WorkerConfig{Concurrency: 1, Limit: Limit{Concurrency: 1}}, ConsumerConfig{ConsumerID: "holder"})
	_, err := qA.Enqueue(ctx, []byte("held"))
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "one slot held", func() bool {
		n, err := qA.LimitInFlight(ctx)
		return err == nil && n == 1
	})
	gB := lifecycle.New()
	startWorker(t, gB, qB, hold, WorkerConfig{Concurrency: 1, Limit: Limit{Concurrency: 1}}, ConsumerConfig{ConsumerID: "waiter"})
	_, err = qB.Enqueue(ctx, []byte("waits"))
	require.NoError(t, err)
	rdb := pB.Client()
	testutil.Eventually(t, testutil.Wait, "the waiter recorded", func() bool {
		n, err := rdb.ZCard(ctx, qB.k.limitWaiting()).Result()
		return err == nil && n == 1
	})
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, gB.Close(cctx))
	n, err := rdb.ZCard(ctx, qB.k.limitWaiting()).Result()
	require.NoError(t, err)
	require.Zero(t, n, "a closed worker waits for nothing")
}
