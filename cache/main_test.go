package cache

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

// item is the small struct of the tests and benchmarks.
type item struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Score int64  `json:"score"`
}

func newPool(t testing.TB, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// poolFactory builds pools on one Redis. The Redis-semantics tests take one,
// so they can run on a single server now and on a cluster later.
type poolFactory func(t testing.TB) *pool.Pool

func serverPools(srv *redistest.Redis) poolFactory {
	return func(t testing.TB) *pool.Pool { return newPool(t, pool.Config{Addrs: []string{srv.Addr()}}) }
}

func newCache[V any](t testing.TB, p *pool.Pool, name string, cfg Config[V]) *Cache[V] {
	t.Helper()
	c, err := New(p, name, cfg)
	require.NoError(t, err)
	return c
}

// started starts c on a new group that the test closes at its end, checking
// that the group's tasks stopped.
func started[V any](t testing.TB, c *Cache[V]) *lifecycle.Group {
	t.Helper()
	g := lifecycle.New()
	require.NoError(t, c.Start(g))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, g.Close(ctx))
	})
	return g
}

// eventually waits for cond, failing the test after a deadline.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeClock is an injected clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
