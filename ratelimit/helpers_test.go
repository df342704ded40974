package ratelimit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the fixed instant tables start from, where testutil.NewClock starts.
var t0 = testutil.T0

// backend is a Redis to run the Redis-semantics tests on: miniredis, a real
// server or a real Redis Cluster. newPool returns a pool on a fresh
// database; commands counts the commands the server has processed (for
// "this cost no Redis command"), INFO and the like excluded.
type backend struct {
	name     string
	newPool  func(t *testing.T) *pool.Pool
	commands func(t *testing.T) int64
}

func miniBackend(t *testing.T) backend {
	m := redistest.Mini(t)
	return backend{
		name:     "miniredis",
		newPool:  func(t *testing.T) *pool.Pool { return newPool(t, pool.Config{Addrs: []string{m.Addr()}}) },
		commands: func(*testing.T) int64 { return int64(m.CommandCount()) },
	}
}

func serverBackend(t *testing.T) backend {
	srv := redistest.Server(t)
	return backend{
		name:    "server",
		newPool: func(t *testing.T) *pool.Pool { return newPool(t, pool.Config{Addrs: []string{srv.Addr()}}) },
		commands: func(t *testing.T) int64 {
			st, err := srv.CommandStats(context.Background())
			require.NoError(t, err)
			return redistest.TotalCalls(st, "info")
		},
	}
}

// clusterBackend shares one cluster between tests, emptied by each newPool.
func clusterBackend(c *redistest.RedisCluster) backend {
	return backend{
		name: "cluster",
		newPool: func(t *testing.T) *pool.Pool {
			require.NoError(t, c.Flush(context.Background()))
			return newPool(t, pool.Config{Addrs: c.Addrs(), ClusterMode: true})
		},
		commands: func(t *testing.T) int64 {
			st, err := c.CommandStats(context.Background())
			require.NoError(t, err)
			var n int64
			for name, calls := range st {
				// The client's own topology and command-table lookups are
				// not the limiter's traffic.
				if name != "info" && name != "command" && !strings.HasPrefix(name, "cluster|") && !strings.HasPrefix(name, "command|") {
					n += calls
				}
			}
			return n
		},
	}
}

// onBoth runs a Redis-semantics test on miniredis and on a real server.
// Every test run through it is also in clusterSuite (cluster_test.go),
// which runs them all on one Redis Cluster.
func onBoth(t *testing.T, test func(t *testing.T, b backend)) {
	t.Run("miniredis", func(t *testing.T) { test(t, miniBackend(t)) })
	t.Run("server", func(t *testing.T) { test(t, serverBackend(t)) })
}

func newPool(t testing.TB, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// newLimiter builds a limiter for a test. A zero Config.Timeout becomes 10s
// rather than DefaultTimeout: a test that asserts what Redis answered must
// not get the policy's answer because the machine was busy for 250ms (tests
// of the Timeout set it).
func newLimiter(t testing.TB, p *pool.Pool, name string, cfg Config) *Limiter {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	l, err := New(p, name, cfg)
	require.NoError(t, err)
	return l
}

// dials returns the dial attempts of a pool's shared lanes.
func dials(p *pool.Pool) uint64 {
	s := p.Stats()
	return s.Request.Dials + s.Background.Dials
}

// mini returns a miniredis and a pool on it, for tests that need miniredis's
// own controls.
func mini(t *testing.T) (*miniredis.Miniredis, *pool.Pool) {
	m := redistest.Mini(t)
	return m, newPool(t, pool.Config{Addrs: []string{m.Addr()}})
}

func us(n int64) time.Duration { return time.Duration(n) * time.Microsecond }

// keepState makes l's state stay in Redis until the test's server goes,
// instead of for its PX on Redis's clock. A test with fixed instants
// (Config.Now) on a real server otherwise depends on being faster than the
// limit: once a key's ResetAfter has passed in real time its state is gone,
// and the next call sees a full bucket (see Config.Now). The script is the
// production one without the SET's PX; PX itself is checked by
// TestStateTTLMiniredis and TestStateExpires.
func keepState(t testing.TB, l *Limiter) {
	t.Helper()
	const px = ", 'PX', px)"
	require.Equal(t, 2, strings.Count(gcraScript, px), "keepState no longer matches the script's SETs")
	require.Equal(t, 2, strings.Count(windowsScript, px), "keepState no longer matches the windows script's SETs")
	l.script = redis.NewScript(strings.ReplaceAll(gcraScript, px, ")"))
	l.multi = redis.NewScript(strings.ReplaceAll(windowsScript, px, ")"))
}
