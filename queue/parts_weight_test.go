package queue

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// TestPartitionWeightKeptWithoutTheOption: only an explicit PartitionWeight
// changes a partition's weight; an enqueue without it (one job, a batch, a
// debounced job) keeps it, and a new partition starts at 1.
func TestPartitionWeightKeptWithoutTheOption(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			q := mustQueue(t, np(t, pool.Config{}), "wkeep", Config{})
			ctx := context.Background()
			weight := func() string {
				t.Helper()
				w, err := q.p.Client().HGet(ctx, q.k.partIdx(), "tenant w").Result()
				if err != nil {
					return "1" // no field: weight 1
				}
				return w
			}
			_, err := q.Enqueue(ctx, []byte("a"), Partition("tenant"))
			require.NoError(t, err)
			require.Equal(t, "1", weight(), "a new partition starts at 1")
			_, err = q.Enqueue(ctx, []byte("b"), Partition("tenant"), PartitionWeight(3))
			require.NoError(t, err)
			require.Equal(t, "3", weight())
			_, err = q.Enqueue(ctx, []byte("c"), Partition("tenant"))
			require.NoError(t, err)
			require.Equal(t, "3", weight(), "an enqueue without the option keeps the weight")
			_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("d"), []byte("e")}, Partition("tenant"))
			require.NoError(t, err)
			require.Equal(t, "3", weight(), "a batch without the option keeps the weight")
			_, err = q.Enqueue(ctx, []byte("f"), ID("deb"), Debounce(), Delay(time.Minute), Partition("tenant"))
			require.NoError(t, err)
			require.Equal(t, "3", weight(), "a debounced job without the option keeps the weight")
			_, err = q.Enqueue(ctx, []byte("g"), ID("deb2"), Debounce(), Delay(time.Minute), Partition("tenant"), PartitionWeight(5))
			require.NoError(t, err)
			require.Equal(t, "5", weight(), "a debounced job with the option sets it")
			_, err = q.Enqueue(ctx, []byte("h"), Partition("tenant"), PartitionWeight(1))
			require.NoError(t, err)
			require.Equal(t, "1", weight(), "an explicit weight of 1 sets it back")
			checkPartCounts(t, q)
		})
	}
}

// TestPartitionMixedLimitsReleaseUnholds: processes that disagree on
// PartitionConcurrency each admit by their own. A partition the take of a
// consumer at PartitionConcurrency 1 moved to phold (its limit counts the
// slot of a job a consumer at 5 runs) comes back to psched when that slot
// is released, by the loose consumer's outcome or by the sweep of the
// loose consumer when it died, whatever the releaser's own limit; the
// tight take then serves it.
func TestPartitionMixedLimitsReleaseUnholds(t *testing.T) {
	for _, srv := range scriptServers() {
		for _, how := range []string{"outcome", "sweep"} {
			t.Run(srv.name+"/"+how, func(t *testing.T) {
				addr := srv.addr(t)
				rdb := redis.NewClient(&redis.Options{Addr: addr})
				t.Cleanup(func() { _ = rdb.Close() })
				ctx := context.Background()
				q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "mixlim", Config{})
				_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("x1"), []byte("x2"), []byte("x3")}, Partition("x"))
				require.NoError(t, err)
				loose := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("loose", "tok"), pconc: 5}
				tight := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("tight", "tok"), pconc: 1}
				_, looseJob := loose.take(1, 0)
				require.Len(t, looseJob, 1, "the loose consumer runs one job of x")
				_, got := tight.take(10, 0)
				require.Empty(t, got, "x is at the tight limit: its slot is held by the loose consumer")
				score, err := rdb.ZScore(ctx, q.k.partHold(), "x").Result()
				require.NoError(t, err, "the tight take held x")
				require.Equal(t, float64(1<<53), score, "held at its limit (partAtLimit)")
				switch how {
				case "outcome":
					require.EqualValues(t, 1, loose.release(looseJob...))
				case "sweep":
					lo, hi := lexRange(loose.prefix)
					n, err := limitReleaseScript.Run(ctx, rdb, append(q.k.withLevels(append([]string{q.k.limitHeld(), q.k.ready, q.k.bell, q.k.limitPart()}, q.k.partKeys()...)...), q.k.limitWaiting()), "range", 0, 0, lo, hi).Int()
					require.NoError(t, err)
					require.Equal(t, 1, n)
				}
				_, err = rdb.ZScore(ctx, q.k.partHold(), "x").Result()
				require.ErrorIs(t, err, redis.Nil, "the release moved x out of phold")
				_, err = rdb.ZScore(ctx, q.k.partSched(), "x").Result()
				require.NoError(t, err, "x is in psched again")
				_, got = tight.take(10, 0)
				require.Len(t, got, 1, "the tight consumer now runs one job of x")
				_, got = tight.take(10, 0)
				require.Empty(t, got, "and x is at its limit again")
				checkPartCounts(t, q)
			})
		}
	}
}
