package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// Stats.OldestReady sees the jobs waiting in partitions: a paused queue
// holding only partitioned jobs reports their age growing, as it does for
// the ready list.
func TestPartitionOldestReady(t *testing.T) {
	p := miniPool(t, pool.Config{})
	now := time.UnixMilli(1_700_000_000_000)
	q := mustQueue(t, p, "oldest", Config{Now: func() time.Time { return now }})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("x"), Partition("a"))
	require.NoError(t, err)
	now = now.Add(time.Minute)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), s.Ready)
	assert.Equal(t, time.Minute, s.OldestReady)
}
