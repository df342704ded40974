package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// TestPartitionDebounceReplaceKeepsWeight: the replacement of a debounced
// job that is its partition's only job takes its place: the partition does
// not run dry in between, so it keeps its weight (and its finish tag).
func TestPartitionDebounceReplaceKeepsWeight(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			q := mustQueue(t, np(t, pool.Config{}), "wdeb", Config{})
			ctx := context.Background()
			c := q.p.Client()
			weight := func() string {
				t.Helper()
				w, err := c.HGet(ctx, q.k.partIdx(), "tenant w").Result()
				if err != nil {
					return "1"
				}
				return w
			}
			_, err := q.Enqueue(ctx, []byte("a"), ID("deb"), Debounce(), Delay(time.Minute), Partition("tenant"), PartitionWeight(7))
			require.NoError(t, err)
			require.Equal(t, "7", weight())
			require.NoError(t, c.HSet(ctx, q.k.partTag(), "tenant", "42").Err())
			checkPartCounts(t, q)
			for _, opt := range []EnqueueOption{Debounce(), ReplacePayload()} {
				_, err = q.Enqueue(ctx, []byte("b"), ID("deb"), opt, Delay(time.Minute), Partition("tenant"))
				require.NoError(t, err)
				require.Equal(t, "7", weight(), "the replacement of the partition's only job keeps its weight")
				tag, err := c.HGet(ctx, q.k.partTag(), "tenant").Result()
				require.NoError(t, err, "the replacement keeps the partition's finish tag")
				require.Equal(t, "42", tag)
				checkPartCounts(t, q)
			}
		})
	}
}
