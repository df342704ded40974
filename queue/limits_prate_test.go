package queue

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestLimitPartitionRateConfig: the partitions' rate is validated like
// the queue's, with errors naming the field.
func TestLimitPartitionRateConfig(t *testing.T) {
	q := mustQueue(t, miniPool(t, pool.Config{}), "prate-cfg", Config{})
	h := func(context.Context, *Job) error { return nil }
	for _, c := range []struct {
		l    Limit
		want string
	}{
		{Limit{PartitionRate: -1}, "Limit.PartitionRate must not be negative"},
		{Limit{PartitionPer: time.Second}, "Limit.PartitionPer and PartitionBurst need a PartitionRate"},
		{Limit{PartitionBurst: 2}, "Limit.PartitionPer and PartitionBurst need a PartitionRate"},
		{Limit{PartitionRate: 1}, "Limit.PartitionPer must be a whole number of µs"},
		{Limit{PartitionRate: 1, PartitionPer: 1500 * time.Nanosecond}, "Limit.PartitionPer must be a whole number of µs"},
		{Limit{PartitionRate: 1, PartitionPer: time.Second, PartitionBurst: -1}, "Limit.PartitionBurst must be at least 1"},
		{Limit{PartitionRate: 1, PartitionPer: 1 << 40 * time.Microsecond, PartitionBurst: 1 << 20}, "Limit.PartitionBurst (1048576) times the interval"},
	} {
		_, err := newWorker(t, q, h, WorkerConfig{Limit: c.l})
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", c.l)
		require.ErrorContains(t, err, c.want, "%+v", c.l)
	}
	w, err := newWorker(t, q, h, WorkerConfig{Limit: Limit{PartitionRate: 3, PartitionPer: time.Second}})
	require.NoError(t, err)
	require.Equal(t, 3, w.cfg.Limit.PartitionBurst, "PartitionBurst defaults to PartitionRate")
	require.EqualValues(t, 333334, partStep(w.cfg.Limit), "the interval in whole µs, rounded up")
}

// TestLimitPartitionRateTakeScript walks the take through a rate of 2 jobs
// per second per partition (burst 2) on fixed instants: each partition
// gives its burst, then is held and the take answers the µs until the
// first may run again; a partition that has its burst left flows while
// they wait; at the instant, one more of each.
func TestLimitPartitionRateTakeScript(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := srv.addr(t)
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "prate", Config{})
			for i := range 5 {
				for _, part := range []string{"a", "b"} {
					_, err := q.Enqueue(ctx, fmt.Appendf(nil, "%s%d", part, i+1), Partition(part))
					require.NoError(t, err)
				}
			}
			const t0, step = int64(1_700_000_000_000_000), int64(500_000)
			l := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("c1", "tok"), pstep: step, pburst: 2}
			payloads := func(elems []string) []string {
				var out []string
				for _, e := range elems {
					env, err := decodeEnvelope([]byte(e))
					require.NoError(t, err)
					out = append(out, string(env.payload))
				}
				return out
			}
			wait, got := l.takeRaw(10, t0)
			require.ElementsMatch(t, []string{"a1", "a2", "b1", "b2"}, payloads(got), "each partition's burst")
			require.Equal(t, fmt.Sprint("p", step), wait, "the µs until a partition may run again")
			wait, got = l.takeRaw(10, t0+step-1)
			require.Empty(t, got)
			require.Equal(t, "p1", wait)
			_, err := q.Enqueue(ctx, []byte("c1"), Partition("c"))
			require.NoError(t, err)
			_, got = l.takeRaw(10, t0+step-1)
			require.Equal(t, []string{"c1"}, payloads(got), "another partition flows while a and b wait")
			wait, got = l.takeRaw(10, t0+step)
			require.ElementsMatch(t, []string{"a3", "b3"}, payloads(got), "one more of each at the instant")
			require.Equal(t, fmt.Sprint("p", step), wait)
			held, err := rdb.ZRange(ctx, q.k.partHold(), 0, -1).Result()
			require.NoError(t, err)
			require.ElementsMatch(t, []string{"a", "b"}, held)
			checkPartCounts(t, q)
			// Far later: the burst again, and the states of the past are dropped.
			_, got = l.takeRaw(10, t0+100*step)
			require.ElementsMatch(t, []string{"a4", "a5", "b4", "b5"}, payloads(got))
			n, err := rdb.ZCard(ctx, q.k.limitPartRateOf(step, 2)).Result()
			require.NoError(t, err)
			require.EqualValues(t, 2, n, "the states of a and b (c's has passed)")
			checkPartCounts(t, q)
		})
	}
}

// TestLimitPartitionRateTwoConsumers: two consumers on one clock (injected,
// frozen between steps), a rate of 2 jobs per second per partition with a
// burst of 2: each partition starts its burst, then exactly one more job
// per interval the clock moves, whatever the two consumers do, with no
// attempt spent waiting; a partition with its burst left runs meanwhile.
func TestLimitPartitionRateTwoConsumers(t *testing.T) {
	addr := redistest.Server(t).Addr()
	q0 := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "prate2", Config{})
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	started := map[string]int{}
	attempts := map[int]int{}
	h := func(_ context.Context, j *Job) error {
		mu.Lock()
		started[j.Partition]++
		attempts[j.Attempt]++
		mu.Unlock()
		return nil
	}
	count := func(part string) int { mu.Lock(); defer mu.Unlock(); return started[part] }
	qs := []*Queue{
		mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "prate2", Config{}),
		mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "prate2", Config{}),
	}
	g := group(t)
	var ws []*Worker
	for i, q := range qs {
		w, err := NewWorker(consumerFor(t, g, q), q, h, WorkerConfig{Concurrency: 4,
			Limit: Limit{PartitionRate: 2, PartitionPer: time.Second}})
		require.NoError(t, err, i)
		w.limitNow = clock
		require.NoError(t, w.Start(g))
		ws = append(ws, w)
	}
	for _, part := range []string{"a", "b"} {
		batch := make([][]byte, 10)
		for i := range batch {
			batch[i] = []byte(part)
		}
		_, err := q0.EnqueueBatch(ctx, batch, Partition(part))
		require.NoError(t, err)
	}
	testutil.Eventually(t, 10*time.Second, "each partition's burst", func() bool { return count("a") == 2 && count("b") == 2 })
	_, err := q0.Enqueue(ctx, []byte("c"), Partition("c"))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "partition c while a and b wait", func() bool { return count("c") == 1 })
	for k := 1; k <= 3; k++ {
		mu.Lock()
		now = now.Add(500 * time.Millisecond)
		mu.Unlock()
		testutil.Eventually(t, 10*time.Second, fmt.Sprint("interval ", k), func() bool { return count("a")+count("b") == 4+2*k })
		require.Equal(t, 2+k, count("a"), "exactly one more job of a per interval")
		require.Equal(t, 2+k, count("b"), "exactly one more job of b per interval")
	}
	mu.Lock()
	require.Equal(t, map[int]int{1: 11}, attempts, "no attempt spent waiting for the rate")
	mu.Unlock()
	testutil.Eventually(t, 10*time.Second, "a fetcher asleep on the partitions' rate", func() bool {
		for _, w := range ws {
			if w.Stats().FetcherState == "waiting: the partitions' rate limit" {
				return true
			}
		}
		return false
	})
}

// TestLimitPartitionRateNoPolling: a partition whose rate allows one job
// an hour: after the first, the consumer sleeps on one timer (an hour),
// and while it waits no take runs: Redis sees no script over two of the
// hub's BlockTimeout rounds.
func TestLimitPartitionRateNoPolling(t *testing.T) {
	srv := redistest.Server(t)
	q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{srv.Addr()}}), "prate-idle", Config{})
	ctx := context.Background()
	g := group(t)
	ran := make(chan struct{}, 10)
	w := startWorker(t, g, q, func(context.Context, *Job) error { ran <- struct{}{}; return nil },
		WorkerConfig{BlockTimeout: time.Second, Limit: Limit{PartitionRate: 1, PartitionPer: time.Hour}})
	for range 3 {
		_, err := q.Enqueue(ctx, []byte("x"), Partition("slow"))
		require.NoError(t, err)
	}
	testutil.Recv(t, ran, "the first job")
	testutil.Eventually(t, 10*time.Second, "the fetcher asleep on the partitions' rate", func() bool {
		return w.Stats().FetcherState == "waiting: the partitions' rate limit"
	})
	before, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "two BlockTimeout rounds of the hub", func() bool {
		s, err := srv.CommandStats(ctx)
		return err == nil && s["bzpopmin"] >= before["bzpopmin"]+2
	})
	after, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	scripts := after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"]
	var calls []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			calls = append(calls, fmt.Sprint(k, "=", d))
		}
	}
	t.Logf("commands while waiting: %s", strings.Join(calls, " "))
	require.LessOrEqual(t, scripts, int64(1), "no take while the rate holds the partition (a heartbeat's script at most)")
	n, err := q.p.Client().ZCard(ctx, q.k.fair()).Result()
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "the others wait in their partition")
}
