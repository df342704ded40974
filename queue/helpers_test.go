package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newPoolFunc builds a pool on some Redis for one test.
type newPoolFunc func(t testing.TB, cfg pool.Config) *pool.Pool

func miniPool(t testing.TB, cfg pool.Config) *pool.Pool {
	m := redistest.Mini(t)
	cfg.Addrs = []string{m.Addr()}
	return mustPool(t, cfg)
}

// serverPools returns a newPoolFunc on one real redis-server per test.
func serverPool(t testing.TB, cfg pool.Config) *pool.Pool {
	srv := redistest.Server(t)
	cfg.Addrs = []string{srv.Addr()}
	return mustPool(t, cfg)
}

func mustPool(t testing.TB, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// group returns a lifecycle group closed (with a deadline) at the end of the
// test, before the pool.
func group(t testing.TB) *lifecycle.Group {
	g := lifecycle.New()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, g.Close(ctx))
	})
	return g
}

func mustQueue(t testing.TB, p *pool.Pool, name string, cfg Config) *Queue {
	t.Helper()
	q, err := New(p, name, cfg)
	require.NoError(t, err)
	return q
}

// consumers holds the consumer of each (pool, group, namespace) that
// startWorker used, as a process has one: workers started on one pool and
// group share a heartbeat.
var consumers sync.Map // consumerKey -> *Consumer

type consumerKey struct {
	p  *pool.Pool
	g  *lifecycle.Group
	ns string
}

// consumerFor returns the consumer of q's pool and namespace on g, made
// with cc (Namespace, Now and Logger default to the queue's) the first
// time, or anew when cc is given.
func consumerFor(t testing.TB, g *lifecycle.Group, q *Queue, cc ...ConsumerConfig) *Consumer {
	t.Helper()
	key := consumerKey{p: q.p, g: g, ns: q.cfg.Namespace}
	if c, ok := consumers.Load(key); ok && len(cc) == 0 {
		return c.(*Consumer)
	}
	c := newConsumer(t, q, cc...)
	consumers.Store(key, c)
	t.Cleanup(func() { consumers.CompareAndDelete(key, c) })
	return c
}

// newConsumer returns a consumer for q, made with cc (Namespace, Now and
// Logger default to the queue's).
func newConsumer(t testing.TB, q *Queue, cc ...ConsumerConfig) *Consumer {
	t.Helper()
	var cfg ConsumerConfig
	if len(cc) > 0 {
		cfg = cc[0]
	}
	if cfg.Namespace == "" {
		cfg.Namespace = q.cfg.Namespace
	}
	if cfg.Now == nil {
		cfg.Now = q.cfg.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = q.cfg.Logger
	}
	c, err := NewConsumer(q.p, cfg)
	require.NoError(t, err)
	return c
}

// newWorker is NewWorker on a consumer of its own (see newConsumer).
func newWorker(t testing.TB, q *Queue, h Handler, cfg WorkerConfig, cc ...ConsumerConfig) (*Worker, error) {
	t.Helper()
	return NewWorker(newConsumer(t, q, cc...), q, h, cfg)
}

// startWorker starts a worker of q on g, on the consumer of its pool, group
// and namespace (consumerFor: a new one when cc is given).
func startWorker(t testing.TB, g *lifecycle.Group, q *Queue, h Handler, cfg WorkerConfig, cc ...ConsumerConfig) *Worker {
	t.Helper()
	w, err := NewWorker(consumerFor(t, g, q, cc...), q, h, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start(g))
	return w
}

// recv receives from ch, failing the test when nothing came within the
// deadline: for waits longer than testutil.Recv's.
func recv[T any](t testing.TB, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("timed out after %s waiting for %s", within, what)
		panic("unreachable")
	}
}
