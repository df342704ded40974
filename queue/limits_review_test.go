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
