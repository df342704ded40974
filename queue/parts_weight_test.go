package queue

import (
	"context"
	"testing"
	"time"

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
