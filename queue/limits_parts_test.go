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

// TestLimitPartMayReplacesTheHook: the limited take's partition hook is
// the limits' one (the partitions' default text was found and replaced).
func TestLimitPartMayReplacesTheHook(t *testing.T) {
	require.NotContains(t, limitTakeLua, partHooksDefault)
	require.Contains(t, limitTakeLua, "limitPartConc")
}

// TestLimitPartitionTakeScript: with a per-partition limit of 1, a take
// gives one job of each partition, skips a partition at its limit while
// the others flow, and a partition's release frees its next job (and
// rings); the counts per partition stay exact.
func TestLimitPartitionTakeScript(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := srv.addr(t)
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "limp", Config{})
			for _, j := range []struct{ part, payload string }{{"a", "a1"}, {"a", "a2"}, {"a", "a3"}, {"b", "b1"}, {"b", "b2"}} {
				_, err := q.Enqueue(ctx, []byte(j.payload), Partition(j.part))
				require.NoError(t, err)
			}
			l := limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("c1", "tok"), pconc: 1}
			payloads := func(elems []string) []string {
				var out []string
				for _, e := range elems {
					env, err := decodeEnvelope([]byte(e))
					require.NoError(t, err)
					out = append(out, string(env.payload))
				}
				return out
			}
			require.NoError(t, rdb.Del(ctx, q.k.bell).Err())
			_, got := l.take(10, 0)
			require.ElementsMatch(t, []string{"a1", "b1"}, payloads(got), "one job per partition")
			require.Zero(t, rdb.Exists(ctx, q.k.bell).Val(), "stopped by the partitions' limits: no ring")
			_, again := l.take(10, 0)
			require.Empty(t, again, "both partitions at their limit")
			counts, err := rdb.HGetAll(ctx, q.k.limitPart()).Result()
			require.NoError(t, err)
			require.Equal(t, map[string]string{"a": "1", "b": "1"}, counts)
			var a1 string
			for _, e := range got {
				if strings.HasSuffix(e, "|a1") {
					a1 = e
				}
			}
			require.EqualValues(t, 1, l.release(a1))
			require.EqualValues(t, 1, rdb.Exists(ctx, q.k.bell).Val(), "a full partition's release rings")
			_, got = l.take(10, 0)
			require.Equal(t, []string{"a2"}, payloads(got), "a's next; b still at its limit")
			counts, err = rdb.HGetAll(ctx, q.k.limitPart()).Result()
			require.NoError(t, err)
			require.Equal(t, map[string]string{"a": "1", "b": "1"}, counts)
		})
	}
}

// TestLimitPartitionFlow: 4 consumers x 10 handlers, a limit of 3 jobs in
// flight per partition: the hot partition's backlog never runs more than
// 3 at once, while a cold partition's jobs and unpartitioned ones keep
// flowing past it (all done while the backlog still waits).
func TestLimitPartitionFlow(t *testing.T) {
	addr := redistest.Server(t).Addr()
	p0 := mustPool(t, pool.Config{Addrs: []string{addr}})
	q0 := mustQueue(t, p0, "lim-part", Config{})
	ctx := context.Background()
	const hot, limit = 600, 3
	var mu sync.Mutex
	running := map[string]int{}
	most := map[string]int{}
	var hotDone, otherDone atomic.Int64
	h := func(_ context.Context, j *Job) error {
		part := string(j.Payload)
		mu.Lock()
		running[part]++
		most[part] = max(most[part], running[part])
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		running[part]--
		mu.Unlock()
		if part == "hot" {
			hotDone.Add(1)
		} else {
			otherDone.Add(1)
		}
		return nil
	}
	for i := range 4 {
		q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "lim-part", Config{})
		startWorker(t, group(t), q, h, WorkerConfig{Concurrency: 10, Limit: Limit{PartitionConcurrency: limit}}, ConsumerConfig{ConsumerID: fmt.Sprint("p", i)})
	}
	payloads := make([][]byte, hot)
	for i := range payloads {
		payloads[i] = []byte("hot")
	}
	_, err := q0.EnqueueBatch(ctx, payloads, Partition("hot"))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "the hot partition running", func() bool { return hotDone.Load() > 0 })
	for range 20 {
		_, err := q0.Enqueue(ctx, []byte("cold"), Partition("cold"))
		require.NoError(t, err)
		_, err = q0.Enqueue(ctx, []byte("plain"))
		require.NoError(t, err)
	}
	testutil.Eventually(t, 10*time.Second, "the cold and plain jobs", func() bool { return otherDone.Load() == 40 })
	require.Less(t, hotDone.Load(), int64(hot), "they ran past the hot backlog")
	testutil.Eventually(t, 60*time.Second, "the hot backlog", func() bool { return hotDone.Load() == hot })
	mu.Lock()
	defer mu.Unlock()
	t.Logf("most in flight: %v", most)
	require.Equal(t, limit, most["hot"], "never more than the partition's limit, and the limit reached")
	require.LessOrEqual(t, most["cold"], limit)
	require.Greater(t, most["plain"], 0)
	testutil.Eventually(t, 5*time.Second, "every slot given back", func() bool {
		n, err := p0.Client().HLen(ctx, q0.k.limitPart()).Result()
		m, err2 := q0.LimitInFlight(ctx)
		return err == nil && err2 == nil && n == 0 && m == 0
	})
}
