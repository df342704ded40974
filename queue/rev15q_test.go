package queue

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Before the Consumer, workers of one pool, namespace and group with the
// same ConsumerID shared one heartbeat and one incarnation token. Two
// Consumers with one ID in one process would each write their own token
// under that ID: the queue of the first then looks like a previous life of
// the second, and any process sweeps its running jobs (run twice). The
// second is refused at Start instead.
func TestConsumerIDRunsOnceInAProcess(t *testing.T) {
	p := miniPool(t, pool.Config{})
	h := func(ctx context.Context, _ *Job) error { <-ctx.Done(); return nil }
	g := group(t)
	a, err := NewConsumer(p, ConsumerConfig{ConsumerID: "pod-0"})
	require.NoError(t, err)
	b, err := NewConsumer(p, ConsumerConfig{ConsumerID: "pod-0"})
	require.NoError(t, err)
	wa, err := NewWorker(a, mustQueue(t, p, "a", Config{}), h, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, wa.Start(g))
	wb, err := NewWorker(b, mustQueue(t, p, "b", Config{}), h, WorkerConfig{})
	require.NoError(t, err)
	err = wb.Start(g)
	require.ErrorContains(t, err, `consumer ID "pod-0" already runs in this process`)

	// Whatever Start said, queue a's token is still the live one: no sweep
	// can take a's jobs for a previous life's.
	ctx := context.Background()
	live, err := p.Client().HGet(ctx, liveKey(DefaultNamespace), "pod-0").Result()
	require.NoError(t, err)
	tok, err := p.Client().HGet(ctx, newKeys(DefaultNamespace, "a").incarnations, "pod-0").Result()
	require.NoError(t, err)
	require.Equal(t, live, tok, "queue a's incarnation is the live one")

	// Another namespace, or another pool, is another consumer: allowed.
	other, err := NewConsumer(p, ConsumerConfig{ConsumerID: "pod-0", Namespace: "ns2"})
	require.NoError(t, err)
	wo, err := NewWorker(other, mustQueue(t, p, "a", Config{Namespace: "ns2"}), h, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, wo.Start(g))

	// Once a's group closed, b may run under the ID.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, g.Close(cctx))
	require.NoError(t, wb.Start(group(t)))
}

// Before the Consumer, the heartbeat logged through the logger of the
// worker that started it (by default its queue's). A Consumer without a
// Logger of its own keeps doing so, instead of discarding the heartbeat's
// failures.
func TestConsumerLogsToTheQueueLoggerByDefault(t *testing.T) {
	m := redistest.Mini(t)
	p := mustPool(t, pool.Config{Addrs: []string{m.Addr()}})
	logs := &lockedBuffer{}
	q := mustQueue(t, p, "a", Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	c, err := NewConsumer(p, ConsumerConfig{HeartbeatInterval: MinHeartbeatInterval})
	require.NoError(t, err)
	w, err := NewWorker(c, q, func(context.Context, *Job) error { return nil }, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, w.Start(group(t)))
	m.SetError("LOADING injected")
	defer m.SetError("")
	testutil.Eventually(t, testutil.Wait, "a heartbeat failure logged", func() bool {
		return strings.Contains(logs.String(), "queue: heartbeat failed")
	})
}
