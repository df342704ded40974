package queue

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
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

// blockZRem holds the first pipeline that removes member from key until
// release is closed, and closes entered when it starts holding it.
type blockZRem struct {
	key, member      string
	entered, release chan struct{}
	once             sync.Once
}

func (h *blockZRem) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *blockZRem) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *blockZRem) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if a := c.Args(); strings.EqualFold(c.Name(), "zrem") && len(a) == 3 && a[1] == h.key && a[2] == h.member {
				h.once.Do(func() { close(h.entered); <-h.release })
			}
		}
		return next(ctx, cmds)
	}
}

// A Consumer's heartbeat that stops removes its entry from the heartbeat
// set. A Consumer started again on a new group meanwhile, under the same
// ID, must not have its fresh entry removed by the old one's leaving: it
// would look dead (its entry gone) until its next beat, and any process
// would sweep its running jobs.
func TestConsumerRestartWhileTheOldHeartbeatLeaves(t *testing.T) {
	p := miniPool(t, pool.Config{})
	h := func(context.Context, *Job) error { return nil }
	c, err := NewConsumer(p, ConsumerConfig{ConsumerID: "pod-0"})
	require.NoError(t, err)
	g1 := lifecycle.New()
	wa, err := NewWorker(c, mustQueue(t, p, "a", Config{}), h, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, wa.Start(g1))

	hook := &blockZRem{key: heartbeatKey(DefaultNamespace), member: "pod-0", entered: make(chan struct{}), release: make(chan struct{})}
	p.Background().AddHook(hook)
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- g1.Close(ctx)
	}()
	testutil.Recv(t, hook.entered, "the old heartbeat leaving")

	g2 := group(t)
	wb, err := NewWorker(c, mustQueue(t, p, "b", Config{}), h, WorkerConfig{})
	require.NoError(t, err)
	startErr := wb.Start(g2)
	close(hook.release)
	require.NoError(t, testutil.Recv(t, closed, "the old group closed"))
	if startErr != nil {
		require.ErrorContains(t, startErr, "another lifecycle group", "refused only while the old heartbeat runs")
		require.NoError(t, wb.Start(g2))
	}
	ctx := context.Background()
	_, err = p.Client().ZScore(ctx, heartbeatKey(DefaultNamespace), "pod-0").Result()
	require.NoError(t, err, "the running consumer's heartbeat is in the set")
	live, err := p.Client().HGet(ctx, liveKey(DefaultNamespace), "pod-0").Result()
	require.NoError(t, err)
	require.Equal(t, c.node.token, live)
}
