package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func TestZZRestart(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{AppendOnly: true, Args: []string{"--appendfsync", "always"}})
	addr := srv.Addr()
	ctx := context.Background()
	p := mustPool(t, pool.Config{Addrs: []string{addr}})
	q := mustQueue(t, p, "rs", Config{})
	var mu sync.Mutex
	runs := map[string]int{}
	h := func(ctx context.Context, j *Job) error {
		mu.Lock()
		runs[j.ID]++
		mu.Unlock()
		time.Sleep(3 * time.Millisecond)
		return nil
	}
	g := group(t)
	for i := range 3 {
		qi := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "rs", Config{})
		startWorker(t, g, qi, h, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second, Limit: Limit{Concurrency: 5, PartitionConcurrency: 1, PartitionRate: 200, PartitionPer: time.Second, PartitionBurst: 2}},
			ConsumerConfig{ConsumerID: fmt.Sprint("c", i), HeartbeatInterval: 200 * time.Millisecond, HeartbeatTTL: time.Second})
	}
	for i := range 400 {
		opts := []EnqueueOption{ID(fmt.Sprint("j", i))}
		if i%4 != 0 {
			opts = append(opts, Partition(fmt.Sprint("p", i%9)))
		}
		_, err := q.Enqueue(ctx, []byte("x"), opts...)
		require.NoError(t, err)
	}
	testutil.Eventually(t, 10*time.Second, "some ran", func() bool { mu.Lock(); defer mu.Unlock(); return len(runs) > 100 })
	srv.Restart()
	testutil.Eventually(t, 60*time.Second, "all ran", func() bool { mu.Lock(); defer mu.Unlock(); return len(runs) == 400 })
	testutil.Eventually(t, 20*time.Second, "drained", func() bool {
		s, err := q.Stats(ctx)
		if err != nil {
			return false
		}
		return s.Ready == 0 && s.Delayed == 0 && s.InFlight == 0
	})
	c := p.Client()
	for _, k := range []string{q.k.limitHeld(), q.k.limitPart(), q.k.partLen(), q.k.partHold(), q.k.partSched(), q.k.fair()} {
		n, _ := c.Exists(ctx, k).Result()
		t.Logf("%s exists %d", k, n)
	}
	closeGroup(t, g)
	t.Logf("forever: %v", keysForever(t, q))
	mu.Lock()
	tw := 0
	for _, n := range runs {
		if n > 1 {
			tw++
		}
	}
	mu.Unlock()
	t.Logf("twice %d", tw)
}
