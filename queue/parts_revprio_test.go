package queue

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// Review of levels within a partition (parts.go, "Levels within a
// partition").

// TestPartitionPriorityOldestReady: a partition's level-0 job an hour old
// does not hide behind a fresh job of a higher level of its partition
// (its next job): Stats.OldestReady reads the first job of each level of
// the partitions it looks at, as it reads each unpartitioned level's, for
// the partition served next and for one held at its limit.
func TestPartitionPriorityOldestReady(t *testing.T) {
	addr := redistest.Mini(t).Addr()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	now := time.UnixMilli(1_700_000_000_000)
	q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "poldest", Config{Now: func() time.Time { return now }})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("old"), Partition("a"))
	require.NoError(t, err)
	now = now.Add(time.Hour)
	_, err = q.Enqueue(ctx, []byte("fresh"), Partition("a"), Priority(2))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("mid"), Partition("a"), Priority(1))
	require.NoError(t, err)
	require.Equal(t, []string{"fresh", "mid", "old"}, partOrder(t, q, "a"))
	now = now.Add(time.Minute)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, time.Hour+time.Minute, s.OldestReady, "old waits since an hour and a minute (scheduled partition)")

	// Held at its limit: the same.
	l := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("c1", "tok"), pconc: 1}
	_, got := l.take(10, 0)
	require.Len(t, got, 1)
	held, err := rdb.ZRange(ctx, q.k.partHold(), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, held)
	require.Equal(t, []string{"mid", "old"}, partOrder(t, q, "a"))
	s, err = q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, time.Hour+time.Minute, s.OldestReady, "old waits since an hour and a minute (held partition)")
	checkPartCounts(t, q)
}
