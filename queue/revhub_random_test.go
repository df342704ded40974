package queue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// TestConsumersComeAndGoNoJobStranded: three processes' consumers start
// and close at random (each on a random subset of four queues, Concurrency
// 1 to 3, BlockTimeout 1 or 2 s, so workers are often without a free slot
// when a ring pops and their bells left out of the hub's wait) while jobs
// are enqueued in random bursts. At the end one consumer of every queue
// starts, and every job runs exactly once within the wait, with no
// further enqueue: no ring was lost while consumers came and went.
func TestConsumersComeAndGoNoJobStranded(t *testing.T) {
	for name, pools := range map[string]func(testing.TB) func(pool.Config) *pool.Pool{"mini": miniPools, "server": serverPools} {
		t.Run(name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 1))
			newPool := pools(t)
			ctx := context.Background()
			const nq, procs, rounds = 4, 3, 30

			var mu sync.Mutex
			ran := map[string]int{}
			prod := newPool(pool.Config{})
			handle := func(ctx context.Context, j *Job) error {
				// A round trip of work: the worker is often without a free
				// slot when a ring pops.
				if err := prod.Client().Ping(ctx).Err(); err != nil {
					return err
				}
				mu.Lock()
				ran[j.ID]++
				mu.Unlock()
				return nil
			}
			ps := make([]*pool.Pool, procs)
			for i := range ps {
				ps[i] = newPool(pool.Config{})
			}
			groups := make([]*lifecycle.Group, procs)
			closeGroup := func(i int) {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				require.NoError(t, groups[i].Close(cctx))
				groups[i] = nil
			}
			t.Cleanup(func() {
				for i := range groups {
					if groups[i] != nil {
						closeGroup(i)
					}
				}
			})
			start := func(i int, all bool) {
				g := lifecycle.New()
				groups[i] = g
				c, err := NewConsumer(ps[i], ConsumerConfig{})
				require.NoError(t, err)
				for qi := range nq {
					if !all && rng.IntN(2) == 0 {
						continue
					}
					w, err := NewWorker(c, mustQueue(t, ps[i], fmt.Sprint("rnd", qi), Config{}), handle, WorkerConfig{
						Concurrency: 1 + rng.IntN(3), BlockTimeout: time.Duration(1+rng.IntN(2)) * time.Second,
					})
					require.NoError(t, err)
					require.NoError(t, w.Start(g))
				}
			}
			for i := range procs {
				start(i, false)
			}
			qs := make([]*Queue, nq)
			for i := range qs {
				qs[i] = mustQueue(t, prod, fmt.Sprint("rnd", i), Config{})
			}
			var ids []string
			for range rounds {
				for range 1 + rng.IntN(30) {
					q := qs[rng.IntN(nq)]
					if rng.IntN(4) == 0 {
						ps, err := q.EnqueueBatch(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
						require.NoError(t, err)
						ids = append(ids, ps...)
						continue
					}
					id, err := q.Enqueue(ctx, []byte("x"))
					require.NoError(t, err)
					ids = append(ids, id)
				}
				i := rng.IntN(procs)
				closeGroup(i)
				start(i, false)
			}
			closeGroup(0)
			start(0, true)
			testutil.Eventually(t, testutil.Wait, "every job run", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(ran) == len(ids)
			})
			for i := range groups {
				closeGroup(i)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				require.Equal(t, 1, ran[id], "job %s ran once", id)
			}
		})
	}
}
