package queue

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestPartitionHotAtLimitTakeScript: one partition at its concurrency
// limit with a backlog far longer than a take's scan, the queue's clock
// advanced past its jobs' turn by serving others while it was blocked:
// the take still gives the jobs of every other partition (it used to scan
// the hot backlog only and give nothing until hot finished a job).
func TestPartitionHotAtLimitTakeScript(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := srv.addr(t)
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "hotlim", Config{})
			hot := make([][]byte, 300)
			for i := range hot {
				hot[i] = []byte("hot")
			}
			_, err := q.EnqueueBatch(ctx, hot, Partition("hot"))
			require.NoError(t, err)
			l := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("c1", "tok"), pconc: 1}
			_, got := l.take(10, 0)
			require.Len(t, got, 1, "hot gives one job, then is at its limit")
			// Unpartitioned jobs served while hot is blocked advance the clock.
			for range 3 {
				plain := make([][]byte, 100)
				for i := range plain {
					plain[i] = []byte("plain")
				}
				_, err = q.EnqueueBatch(ctx, plain)
				require.NoError(t, err)
				_, got = l.take(100, 0)
				require.Len(t, got, 100)
			}
			for i := range 100 {
				_, err := q.Enqueue(ctx, []byte("other"), Partition(fmt.Sprint("p", i)))
				require.NoError(t, err)
			}
			_, got = l.take(100, 0)
			for _, e := range got {
				require.True(t, strings.HasSuffix(e, "|other"), "only the other partitions: %q", e)
			}
			require.Len(t, got, 100, "every other partition gives its job while hot is at its limit")
		})
	}
}

// TestPartitionHotAtLimitOthersFlow: with PartitionConcurrency 1, a hot
// partition's 500 jobs wait behind its one running job (held until the
// end), other traffic advances the queue's clock, and then 200 other
// partitions' jobs all run while hot's job is still held.
func TestPartitionHotAtLimitOthersFlow(t *testing.T) {
	addr := redistest.Server(t).Addr()
	q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "hot-flow", Config{})
	ctx := context.Background()
	release := make(chan struct{})
	var hotStarted, plainDone, otherDone atomic.Int64
	h := func(ctx context.Context, j *Job) error {
		switch string(j.Payload) {
		case "hot":
			hotStarted.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		case "plain":
			plainDone.Add(1)
		default:
			otherDone.Add(1)
		}
		return nil
	}
	startWorker(t, group(t), q, h, WorkerConfig{Concurrency: 8, Limit: Limit{PartitionConcurrency: 1}}, ConsumerConfig{ConsumerID: "w"})
	var closed sync.Once
	t.Cleanup(func() { closed.Do(func() { close(release) }) }) // before the worker stops (LIFO)
	hot := make([][]byte, 500)
	for i := range hot {
		hot[i] = []byte("hot")
	}
	_, err := q.EnqueueBatch(ctx, hot, Partition("hot"))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "hot's first job running", func() bool { return hotStarted.Load() == 1 })
	plain := make([][]byte, 200)
	for i := range plain {
		plain[i] = []byte("plain")
	}
	_, err = q.EnqueueBatch(ctx, plain)
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "the plain jobs", func() bool { return plainDone.Load() == 200 })
	for i := range 200 {
		_, err := q.Enqueue(ctx, []byte("other"), Partition(fmt.Sprint("p", i)))
		require.NoError(t, err)
	}
	testutil.Eventually(t, 10*time.Second, "the other partitions' jobs while hot is at its limit", func() bool { return otherDone.Load() == 200 })
	require.EqualValues(t, 1, hotStarted.Load(), "hot stayed at its limit")
	closed.Do(func() { close(release) })
	testutil.Eventually(t, 30*time.Second, "hot's backlog", func() bool { return hotStarted.Load() == 500 })
}

// TestPartitionWeight: a partition of weight 3 is served 3 jobs per turn
// of a partition of weight 1 over a long drain (counted in take order);
// the weight goes with the partition, and the option is validated.
func TestPartitionWeight(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			q := mustQueue(t, np(t, pool.Config{}), "weights", Config{})
			ctx := context.Background()
			heavy, light := make([][]byte, 300), make([][]byte, 300)
			for i := range heavy {
				heavy[i], light[i] = []byte("heavy"), []byte("light")
			}
			_, err := q.EnqueueBatch(ctx, heavy, Partition("heavy"), PartitionWeight(3))
			require.NoError(t, err)
			_, err = q.EnqueueBatch(ctx, light, Partition("light"))
			require.NoError(t, err)
			checkPartCounts(t, q)
			count := map[string]int{}
			for range 40 {
				for _, p := range takeFor(t, q, "c1", 10) {
					count[p]++
				}
				require.InDelta(t, 3*count["light"], count["heavy"], 3, "3 of heavy per job of light: %v", count)
			}
			require.Equal(t, 300, count["heavy"], "heavy drained first")
			require.Equal(t, 100, count["light"])
			_, err = q.Enqueue(ctx, []byte("x"), PartitionWeight(2))
			require.ErrorIs(t, err, ErrInvalidArgument, "a weight needs a partition")
			for _, w := range []int{0, -1, 1001} {
				_, err = q.Enqueue(ctx, []byte("x"), Partition("p"), PartitionWeight(w))
				require.ErrorIs(t, err, ErrInvalidArgument, "weight %d", w)
			}
			for range 20 {
				takeFor(t, q, "c1", 10)
			}
			checkPartCounts(t, q)
			n, err := q.p.Client().HLen(ctx, q.k.partIdx()).Result()
			require.NoError(t, err)
			require.Zero(t, n, "no partition left: no index, no weight")
		})
	}
}
