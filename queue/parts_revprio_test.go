package queue

import (
	"context"
	"fmt"
	"strings"
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

// TestPartitionPriorityFullBandBatch: a batch that would take a level of a
// partition past the room of its band (partRenumber's error) is refused
// whole, before it writes anything (tiny bands: 64 positions per level
// above 0): a script error midway would have left the jobs before it in
// pjobs and counted (no MaxPartitionLen, no MaxLen: nothing else refuses
// the batch). A batch that fits still goes in whole.
func TestPartitionPriorityFullBandBatch(t *testing.T) {
	const span, band = 1 << 10, 1 << 6
	script := redis.NewScript(strings.Replace(partEnqueueLua, partLua, partLuaFor(span, band), 1))
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			p := mustPool(t, pool.Config{Addrs: []string{srv.addr(t)}})
			q := mustQueue(t, p, "pfull", Config{})
			c := p.Client()
			ctx := context.Background()
			enqueue := func(n int, opts ...EnqueueOption) error {
				prs := make([]prepared, 0, n)
				for i := range n {
					pr, err := q.prepare([]byte(fmt.Sprint("j", i)), opts)
					require.NoError(t, err)
					prs = append(prs, pr)
				}
				ks, args, _ := q.partArgs(prs, q.partBounds(false))
				return script.Run(ctx, c, ks, args...).Err()
			}
			count := func() (jobs int64, plen string) {
				jobs, err := c.ZCard(ctx, q.k.fair()).Result()
				require.NoError(t, err)
				plen, err = c.HGet(ctx, q.k.partLen(), "f").Result()
				require.NoError(t, err)
				return jobs, plen
			}
			require.NoError(t, enqueue(60, Partition("f"), Priority(3)))
			require.NoError(t, enqueue(3, Partition("f")))
			err := enqueue(10, Partition("f"), Priority(3))
			require.ErrorContains(t, err, "level 3 of partition f is full")
			jobs, plen := count()
			require.EqualValues(t, 63, jobs, "nothing of the refused batch in pjobs")
			require.Equal(t, "63", plen, "nothing of the refused batch counted")
			require.NoError(t, enqueue(4, Partition("f"), Priority(3)), "a batch that fits the band")
			jobs, plen = count()
			require.EqualValues(t, 67, jobs)
			require.Equal(t, "67", plen)
			require.Error(t, enqueue(1, Partition("f"), Priority(3)), "the band is full")
			require.NoError(t, enqueue(1, Partition("f"), Priority(2)), "another level has room")
			checkPartCounts(t, q)
		})
	}
}
