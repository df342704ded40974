package queue

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestLimitStaleWaitingEntryCleared: an entry of this consumer incarnation
// in the waiting set that no take of this worker wrote (a previous worker
// of the same Consumer whose drain release failed) is removed by the new
// worker's first take, even when that take is not stopped by the limit:
// left there, every release below its score rings the doorbell for nobody.
func TestLimitStaleWaitingEntryCleared(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{redistest.Server(t).Addr()}})
	other := mustQueue(t, p, "lim-stale-other", Config{})
	q := mustQueue(t, p, "lim-stale", Config{})
	ctx := context.Background()
	g := group(t)
	c := newConsumer(t, q, ConsumerConfig{ConsumerID: "stale"})
	noop := func(context.Context, *Job) error { return nil }
	// A worker on another queue starts the consumer's incarnation (its
	// token), so the stale entry can be written before q's worker starts.
	wo, err := NewWorker(c, other, noop, WorkerConfig{Concurrency: 1})
	require.NoError(t, err)
	require.NoError(t, wo.Start(g))
	prefix := slotPrefix(c.ID(), c.node.token)
	rdb := p.Client()
	require.NoError(t, rdb.ZAdd(ctx, q.k.limitWaiting(), redis.Z{Score: 2, Member: prefix}).Err())

	done := make(chan struct{}, 1)
	w, err := NewWorker(c, q, func(context.Context, *Job) error {
		select {
		case done <- struct{}{}:
		default:
		}
		return nil
	}, WorkerConfig{Concurrency: 1, Limit: Limit{Concurrency: 2}})
	require.NoError(t, err)
	require.NoError(t, w.Start(g))
	require.Equal(t, c.node.token, w.node.token, "one incarnation for both workers")
	_, err = q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	testutil.Recv(t, done, "the job handled")
	// The take that delivered the job ran before its handler.
	_, err = rdb.ZScore(ctx, q.k.limitWaiting(), prefix).Result()
	require.ErrorIs(t, err, redis.Nil, "the stale waiting entry is still there")
}
