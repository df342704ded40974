package queue

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
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

// TestPartitionHeldCancelAndRenumber: psched and phold hold exactly the
// partitions with jobs due through a partition held at its limit losing
// its last due job to Cancel (a delayed one left), getting a job again
// while its slot is still held, and its release; and a partition whose seq
// ran out at the back renumbers its jobs in order, in its range.
func TestPartitionHeldCancelAndRenumber(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := srv.addr(t)
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "revidx", Config{})
			for _, id := range []string{"a1", "a2"} {
				_, err := q.Enqueue(ctx, []byte(id), Partition("a"), ID(id))
				require.NoError(t, err)
			}
			_, err := q.Enqueue(ctx, []byte("a3"), Partition("a"), ID("a3"), Delay(time.Hour))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte("b1"), Partition("b"), ID("b1"))
			require.NoError(t, err)
			checkPartCounts(t, q)
			l := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("c1", "tok"), pconc: 1}
			jobs := func(es []string) []string {
				return slices.DeleteFunc(es, func(e string) bool { return e == wakeMarker })
			}
			_, got := l.take(10, 0)
			got = jobs(got)
			require.Len(t, got, 2, "a1 and b1")
			held, err := rdb.ZRange(ctx, q.k.partHold(), 0, -1).Result()
			require.NoError(t, err)
			require.Equal(t, []string{"a"}, held)
			checkPartCounts(t, q)
			require.NoError(t, q.Cancel(ctx, "a2"))
			checkPartCounts(t, q) // a has its delayed job only: in neither set
			_, err = q.Enqueue(ctx, []byte("a4"), Partition("a"), ID("a4"))
			require.NoError(t, err)
			checkPartCounts(t, q)
			_, got2 := l.take(10, 0)
			require.Empty(t, jobs(got2), "a is at its limit")
			checkPartCounts(t, q)
			require.EqualValues(t, 2, l.release(got...))
			checkPartCounts(t, q)
			_, got = l.take(10, 0)
			got = jobs(got)
			require.Len(t, got, 1)
			require.True(t, strings.HasSuffix(got[0], "|a4"), got[0])
			checkPartCounts(t, q)

			// Renumbering: r's last job at the end of its range.
			for _, id := range []string{"r1", "r2"} {
				_, err := q.Enqueue(ctx, []byte(id), Partition("r"), ID(id))
				require.NoError(t, err)
			}
			idx, err := rdb.HGet(ctx, q.k.partIdx(), "r").Int64()
			require.NoError(t, err)
			elems, err := rdb.ZRange(ctx, q.k.fair(), 0, -1).Result()
			require.NoError(t, err)
			var r2 string
			for _, e := range elems {
				if strings.HasSuffix(e, "|r2") {
					r2 = e
				}
			}
			require.NotEmpty(t, r2)
			lo := float64(idx) * (1 << 31)
			require.NoError(t, rdb.ZAddXX(ctx, q.k.fair(), redis.Z{Score: lo + (1 << 31) - 1, Member: r2}).Err())
			_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("r3"), []byte("r4")}, Partition("r"))
			require.NoError(t, err)
			checkPartCounts(t, q)
			zs, err := rdb.ZRangeByScoreWithScores(ctx, q.k.fair(), &redis.ZRangeBy{Min: fmt.Sprint(int64(lo)), Max: fmt.Sprint(int64(lo) + (1 << 31) - 1)}).Result()
			require.NoError(t, err)
			var order []string
			for _, z := range zs {
				e, err := decodeEnvelope([]byte(z.Member.(string)))
				require.NoError(t, err)
				order = append(order, string(e.payload))
				require.GreaterOrEqual(t, z.Score, lo)
				require.Less(t, z.Score, lo+(1<<31))
			}
			require.Equal(t, []string{"r1", "r2", "r3", "r4"}, order)
		})
	}
}

// TestPartitionFrontRenumber: a job put back at the front of a partition
// whose first job sits at the start of its level's band (level 0's, from
// MaxLevel*partBand in its range) renumbers the level: the job put back
// runs first, the others in order, all in the band; and
// a job recovered into a partition forgotten meanwhile (its index given
// back and taken by another) lands in its partition's new range.
func TestPartitionFrontRenumber(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			q := mustQueue(t, np(t, pool.Config{}), "frontre", Config{})
			ctx := context.Background()
			c := q.p.Client()
			for _, id := range []string{"f1", "f2", "f3"} {
				_, err := q.Enqueue(ctx, []byte(id), Partition("f"), ID(id))
				require.NoError(t, err)
			}
			require.Len(t, takeFor(t, q, "c", 1), 1)
			idx, err := c.HGet(ctx, q.k.partIdx(), "f").Int64()
			require.NoError(t, err)
			lo := float64(idx) * (1 << 31)
			elems, err := c.ZRange(ctx, q.k.fair(), 0, 0).Result()
			require.NoError(t, err)
			require.NoError(t, c.ZAddXX(ctx, q.k.fair(), redis.Z{Score: lo + MaxLevel*partBand, Member: elems[0]}).Err())
			proc, err := c.LRange(ctx, q.k.proc("c"), 0, -1).Result()
			require.NoError(t, err)
			require.EqualValues(t, 1, recoverScript.Run(ctx, c, q.k.recoverKeys(q.k.proc("c")), proc[0], proc[0]).Val())
			checkPartCounts(t, q)
			zs, err := c.ZRangeWithScores(ctx, q.k.fair(), 0, -1).Result()
			require.NoError(t, err)
			var order []string
			for _, z := range zs {
				e, err := decodeEnvelope([]byte(z.Member.(string)))
				require.NoError(t, err)
				order = append(order, string(e.payload))
				require.GreaterOrEqual(t, z.Score, lo+MaxLevel*partBand)
				require.Less(t, z.Score, lo+(1<<31))
			}
			require.Equal(t, []string{"f1", "f2", "f3"}, order)

			// f runs dry with f1 in flight; g takes its index; f1 comes back.
			require.Len(t, takeFor(t, q, "c", 3), 3)
			checkPartCounts(t, q)
			_, err = q.Enqueue(ctx, []byte("g1"), Partition("g"), ID("g1"))
			require.NoError(t, err)
			gi, err := c.HGet(ctx, q.k.partIdx(), "g").Int64()
			require.NoError(t, err)
			require.Equal(t, idx, gi, "g reuses f's index")
			proc, err = c.LRange(ctx, q.k.proc("c"), 0, -1).Result()
			require.NoError(t, err)
			require.EqualValues(t, 1, recoverScript.Run(ctx, c, q.k.recoverKeys(q.k.proc("c")), proc[0], proc[0]).Val())
			checkPartCounts(t, q)
		})
	}
}

// TestPartitionOldestReadyAllHeld: Stats.OldestReady with partitions held
// at their concurrency limit is the age of the oldest of their next jobs
// (it read phold's first partition only: all are scored alike, so that was
// the first by name), and of psched's next job when older (it read only
// the last of the heads, phold's).
func TestPartitionOldestReadyAllHeld(t *testing.T) {
	addr := redistest.Mini(t).Addr()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	now := time.UnixMilli(1_700_000_000_000)
	q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "oldheld", Config{Now: func() time.Time { return now }})
	ctx := context.Background()
	_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("b1"), []byte("b2")}, Partition("b"))
	require.NoError(t, err)
	now = now.Add(time.Hour)
	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("a1"), []byte("a2")}, Partition("a"))
	require.NoError(t, err)
	l := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("c1", "tok"), pconc: 1}
	_, got := l.take(10, 0)
	require.Len(t, got, 2)
	held, err := rdb.ZRange(ctx, q.k.partHold(), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, held)
	checkPartCounts(t, q)
	now = now.Add(time.Minute)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, time.Hour+time.Minute, s.OldestReady, "b2 waits since an hour and a minute")

	// A partition in psched with an older job than those held: its age.
	at := now
	now = at.Add(-2 * time.Hour)
	_, err = q.Enqueue(ctx, []byte("c1"), Partition("c"))
	require.NoError(t, err)
	now = at
	checkPartCounts(t, q)
	s, err = q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, s.OldestReady, "c1 waits since 2h")
}
