package queue

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
			wait, got := rated.take(1, 1_000_000)
			require.Equal(t, []string{"x"}, got)
			wait, got = rated.take(1, 1_000_001)
			require.Empty(t, got)
			require.Positive(t, wait, "stopped by the rate with a level job waiting: the wait to the next allowed instant")
		})
	}
}
