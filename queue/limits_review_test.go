package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestLimitPreviousLifeSlotsWithoutCounting: a consumer with a stable
// ConsumerID died holding slots and came back on the queue with a Limit
// that counts no slots (a rate only, or no limit: the limit was changed
// in the restart). Its heartbeat is alive and its token for the queue is
// the new one, so no sweep ever gives the previous life's slots back: its
// first reconcile must, or they hold the other processes' concurrency
// limit down forever.
func TestLimitPreviousLifeSlotsWithoutCounting(t *testing.T) {
	for _, c := range []struct {
		name  string
		limit Limit
	}{{"rate", Limit{Rate: 1000, Per: time.Second}}, {"none", Limit{}}} {
		t.Run(c.name, func(t *testing.T) {
			p := miniPool(t, pool.Config{})
			ctx := context.Background()
			q := mustQueue(t, p, "lim-prev-"+c.name, Config{})
			rdb := p.Client()
			e := envelope{id: "gone", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("x")}
			old := slotPrefix("stable", "old") + "\x00" + string(e.encode())
			other := slotPrefix("other", "t9") + "\x00" + "its-job"
			require.NoError(t, rdb.ZAdd(ctx, q.k.limitHeld(), redis.Z{Member: old}, redis.Z{Member: other}).Err())
			g := group(t)
			startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{Limit: c.limit}, ConsumerConfig{ConsumerID: "stable"})
			testutil.Eventually(t, 5*time.Second, "the previous life's slot given back, the other consumer's kept", func() bool {
				held, err := rdb.ZRange(ctx, q.k.limitHeld(), 0, -1).Result()
				return err == nil && len(held) == 1 && held[0] == other
			})
		})
	}
}

// TestLimitRateStateAheadOfItsLimit: a rate's state (its TAT) can lie
// further ahead than its limit ever puts it (Burst intervals) when Redis's
// clock went back (a failover to a replica whose clock is behind): the
// take must then count it as full from now and admit within one interval,
// not stop the queue for as long as the clock went back. And processes
// whose rates disagree (a new rate rolling out) keep apart states: one
// limited to 1 job an hour does not stop one limited to 10 a second for
// an hour (Limit's doc: each admits by its own limit).
func TestLimitRateStateAheadOfItsLimit(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			k := newKeys("bq", "lim-ahead")
			for _, e := range []string{"a", "b", "c", "d", "e"} {
				require.NoError(t, rdb.LPush(ctx, k.ready, e).Err())
			}
			const t0 = 1_767_225_600_000_000
			const hour = 3_600_000_000
			// 10 a second, burst 2 (an interval of 100ms).
			fast := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("fast", "tok"), scale: 1, step: 100_000, burst: 2}
			fast.rate = k.limitRateOf(fast.scale, fast.step, fast.burst)
			_, got := fast.take(2, t0)
			require.Equal(t, []string{"a", "b"}, got, "the burst")
			// Redis's clock goes back an hour.
			wait, got := fast.take(5, t0-hour)
			require.Empty(t, got, "its state counts as full from now")
			require.EqualValues(t, 100_000, wait, "one interval, not the hour")
			_, got = fast.take(5, t0-hour+wait)
			require.Equal(t, []string{"c"}, got, "then its own pace")

			// A process limited to 1 job an hour keeps its own state.
			slow := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("slow", "tok"), scale: 1, step: hour, burst: 1}
			slow.rate = k.limitRateOf(slow.scale, slow.step, slow.burst)
			require.NotEqual(t, fast.rate, slow.rate)
			_, got = slow.take(1, t0)
			require.Equal(t, []string{"d"}, got)
			_, got = fast.take(1, t0+hour/2)
			require.Equal(t, []string{"e"}, got, "the slow limit's hour does not stop the fast one")
		})
	}
}

// TestLimitRateKeyPerLimit: a worker's rate state is its limit's own key,
// in the queue's hash tag.
func TestLimitRateKeyPerLimit(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "lim-key", Config{})
	g := group(t)
	a := startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{Limit: Limit{Rate: 10, Per: time.Second}})
	q2 := mustQueue(t, p, "lim-key", Config{})
	b := startWorker(t, g, q2, func(context.Context, *Job) error { return nil }, WorkerConfig{Limit: Limit{Rate: 1, Per: time.Hour}}, ConsumerConfig{ConsumerID: "other"})
	require.NotEqual(t, a.lim.rate, b.lim.rate)
	require.Equal(t, q.k.limitRateOf(1, 100_000, 10), a.lim.rate)
	require.True(t, strings.HasPrefix(a.lim.rate, q.k.tag+":"), "in the queue's hash tag")
}
