package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// A Consumer's workers agree with it by construction: a queue of another
// namespace or pool is refused at NewWorker, and every worker runs on the
// group of the consumer's heartbeat.
func TestConsumerOwnsItsWorkers(t *testing.T) {
	p := miniPool(t, pool.Config{})
	h := func(context.Context, *Job) error { return nil }
	c, err := NewConsumer(p, ConsumerConfig{ConsumerID: "pod-0"})
	require.NoError(t, err)
	require.Equal(t, "pod-0", c.ID())
	require.Equal(t, DefaultNamespace, c.Namespace())

	_, err = NewWorker(c, mustQueue(t, p, "a", Config{Namespace: "other"}), h, WorkerConfig{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, `queue "a" is in namespace "other", the consumer in "bq"`)
	_, err = NewWorker(c, mustQueue(t, miniPool(t, pool.Config{}), "a", Config{}), h, WorkerConfig{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "another pool")
	_, err = NewWorker(nil, mustQueue(t, p, "a", Config{}), h, WorkerConfig{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "nil consumer")

	g := group(t)
	a, err := NewWorker(c, mustQueue(t, p, "a", Config{}), h, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, a.Start(g))
	b, err := NewWorker(c, mustQueue(t, p, "b", Config{}), h, WorkerConfig{})
	require.NoError(t, err)
	require.ErrorContains(t, b.Start(group(t)), "another lifecycle group")
	require.NoError(t, b.Start(g), "the failed Start may be called again")
	again, err := NewWorker(c, mustQueue(t, p, "a", Config{}), h, WorkerConfig{})
	require.NoError(t, err)
	require.ErrorContains(t, again.Start(g), "already has a worker in this process")
	require.Len(t, g.Tasks(), 3+2*(3+DefaultConcurrency), "one heartbeat, one sweeper and one fetch hub for both workers")
	require.Equal(t, "pod-0", b.Stats().ConsumerID)

	// Once its group closed, the consumer starts again on another group, as
	// a new incarnation of the same ID.
	token := c.node.token
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
	testutil.Eventually(t, testutil.Wait, "the heartbeat forgotten", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.node == nil
	})
	w, err := NewWorker(c, mustQueue(t, p, "a", Config{}), h, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, w.Start(group(t)))
	require.NotEqual(t, token, c.node.token)
}
