package cache

import (
	"context"
	"strings"
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

// backend is a Redis the Redis-semantics tests run on: a single server
// (serverBackend), miniredis, or a Redis Cluster (cluster_test.go). They are
// functions of a backend so that they run on all of them.
type backend struct {
	cfg   pool.Config        // the Redis's addresses (and ClusterMode)
	nodes []*redistest.Redis // its servers, for tests that act on one
}

func serverBackend(srv *redistest.Redis) backend {
	return backend{cfg: pool.Config{Addrs: []string{srv.Addr()}}, nodes: []*redistest.Redis{srv}}
}

// newPool builds a pool on b's Redis, closed at the end of the test.
func (b backend) newPool(t testing.TB) *pool.Pool { return newPool(t, b.cfg) }

// subConn is an invalidation subscriber's connection: the server it is
// connected to and its client id there.
type subConn struct {
	node *redistest.Redis
	id   string
}

// subscribers finds the invalidation subscribers of the caches named name
// (one per started instance) in the CLIENT LISTs of b's running nodes, by
// their connection's name: the pool names a reservation's connections after
// their owner.
func (b backend) subscribers(t testing.TB, name string) []subConn {
	t.Helper()
	want := pool.DefaultClientName + "-blocking-cache:" + name + "_invalidation"
	var out []subConn
	for _, n := range b.nodes {
		if n.PID() == 0 {
			continue
		}
		clients, err := n.Clients(context.Background())
		require.NoError(t, err)
		for _, line := range clients {
			f := clientFields(line)
			// On a cluster the reservation's client also opens plain
			// connections (to load the slot map): only the subscribed one.
			if f["name"] == want && strings.Contains(f["flags"], "P") {
				out = append(out, subConn{node: n, id: f["id"]})
			}
		}
	}
	return out
}

// subscriber returns the one subscriber of the cache named name.
func (b backend) subscriber(t testing.TB, name string) subConn {
	t.Helper()
	subs := b.subscribers(t, name)
	require.Len(t, subs, 1, "subscribers of cache %q", name)
	return subs[0]
}

// clientFields splits a CLIENT LIST line into its fields.
func clientFields(line string) map[string]string {
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			f[k] = v
		}
	}
	return f
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
