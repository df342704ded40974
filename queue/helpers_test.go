package queue

import (
	"context"
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

// eventually waits for cond, failing the test after a deadline.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustQueue(t testing.TB, p *pool.Pool, name string, cfg Config) *Queue {
	t.Helper()
	q, err := New(p, name, cfg)
	require.NoError(t, err)
	return q
}

func startWorker(t testing.TB, g *lifecycle.Group, q *Queue, h Handler, cfg WorkerConfig) *Worker {
	t.Helper()
	w, err := NewWorker(q, h, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start(g))
	return w
}

// recv receives from ch, failing the test when nothing came within the
// deadline: a test never waits on a channel without one.
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
