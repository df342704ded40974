package queue

import (
	"context"
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

// TestLimitRateStateAheadOfItsLimit: the rate's state (its TAT) can lie
// further ahead than this limit ever puts it (Burst intervals): Redis's
// clock went back (a failover to a replica whose clock is behind), or a
// process with a slower rate wrote it (a rate being rolled out). The take
// must then admit by its own limit within one interval, not stop the queue
// until the foreign instant: the docs promise that while limits disagree
// the most permissive holds, and a clock that goes back an hour must not
// stop the queue for an hour.
func TestLimitRateStateAheadOfItsLimit(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			k := newKeys("bq", "lim-ahead")
			for _, e := range []string{"a", "b", "c"} {
				require.NoError(t, rdb.LPush(ctx, k.ready, e).Err())
			}
			const t0 = 1_767_225_600_000_000
			// A process limited to 1 job an hour took one: the TAT is an
			// hour ahead.
			slow := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("slow", "tok"), scale: 1, step: 3_600_000_000, burst: 1}
			_, got := slow.take(1, t0)
			require.Equal(t, []string{"a"}, got)
			// This process: 10 a second, burst 2 (an interval of 100ms).
			fast := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("fast", "tok"), scale: 1, step: 100_000, burst: 2}
			wait, got := fast.take(5, t0+1)
			require.Empty(t, got, "its own burst window is the most it waits for: the state counts as full")
			require.LessOrEqual(t, wait, int64(100_000), "one interval of its own, not the hour")
			_, got = fast.take(5, t0+1+wait)
			require.Equal(t, []string{"b"}, got, "then its own rate")
		})
	}
}
