package browsertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

func mustPool(t testing.TB, addr string) *pool.Pool {
	t.Helper()
	p, err := pool.New(pool.Config{Addrs: []string{addr}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// killJobs enqueues payloads on q with one attempt each and runs a worker
// in this process that fails them all, so they end in q's dead letters
// (the service's own workers are not running yet); it returns their IDs.
func killJobs(t testing.TB, p *pool.Pool, q *queue.Queue, payloads [][]byte) []string {
	t.Helper()
	ctx := context.Background()
	before, err := q.Stats(ctx)
	require.NoError(t, err)
	var ids []string
	for start := 0; start < len(payloads); start += 1000 {
		got, err := q.EnqueueBatch(ctx, payloads[start:min(len(payloads), start+1000)], queue.MaxAttempts(1))
		require.NoError(t, err)
		ids = append(ids, got...)
	}
	g := lifecycle.New()
	c, err := queue.NewConsumer(p, queue.ConsumerConfig{})
	require.NoError(t, err)
	w, err := queue.NewWorker(c, q, func(context.Context, *queue.Job) error {
		return errors.New("failed on purpose by the browser test")
	}, queue.WorkerConfig{Concurrency: 32})
	require.NoError(t, err)
	require.NoError(t, w.Start(g))
	testutil.Eventually(t, 5*time.Minute, "the jobs dead", func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Dead-before.Dead == int64(len(payloads))
	})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, g.Close(cctx))
	return ids
}
