package ratelimit

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestRedisRestartMidRun stops Redis (append-only, so it keeps the buckets)
// under a limiter in use: during the outage calls are answered by the
// policy, failing fast with pool.ErrUnavailable once the pool has seen the
// outage; when Redis is back the limiter asks it again by itself, within
// the pool's probe interval and go-redis's one-second re-dial, and finds
// the buckets where they were. No goroutine is left over.
func TestRedisRestartMidRun(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{AppendOnly: true})
	p := newPool(t, pool.Config{Addrs: []string{srv.Addr()}, ProbeInterval: 50 * time.Millisecond})
	clk := testutil.NewClock()
	l := newLimiter(t, p, "restart", Config{Rate: 5, Period: time.Minute, Now: clk.Now, NoDeniedCache: true})
	keepState(t, l)
	ctx := context.Background()
	for i := range 6 {
		r, err := l.Allow(ctx, "user")
		require.NoError(t, err)
		require.Equal(t, SourceRedis, r.Source)
		require.Equal(t, i < 5, r.Allowed, "call %d", i)
	}
	goroutines := runtime.NumGoroutine()

	require.NoError(t, srv.Stop())
	stopped := time.Now()
	testutil.Eventually(t, testutil.Wait, "calls fail fast", func() bool {
		r, err := l.Allow(ctx, "other")
		require.NoError(t, err)
		require.Equal(t, SourceFallback, r.Source)
		return errors.Is(r.Err, pool.ErrUnavailable)
	})
	fast := 0
	start := time.Now()
	for range 1000 {
		r, err := l.Allow(ctx, "other")
		require.NoError(t, err)
		require.Equal(t, SourceFallback, r.Source)
		if errors.Is(r.Err, pool.ErrUnavailable) {
			fast++
		}
	}
	perCall := time.Since(start) / 1000
	require.Greater(t, fast, 900, "all but the probes fail fast")
	// Stay down long enough for go-redis to stop dialling (after the lane
	// size's worth of failed dials in a row, here 20 probes): it then
	// re-dials once a second on its own.
	testutil.Eventually(t, testutil.Wait, "25 probes", func() bool {
		r, err := l.Allow(ctx, "other")
		require.NoError(t, err)
		require.Equal(t, SourceFallback, r.Source)
		time.Sleep(time.Millisecond) // a caller's pace, not a hot loop
		return p.Health().Probes >= 25
	})

	srv.Start()
	restarted := time.Now()
	testutil.Eventually(t, testutil.Wait, "Redis answers again", func() bool {
		r, err := l.Allow(ctx, "user")
		require.NoError(t, err)
		if r.Source != SourceRedis {
			time.Sleep(time.Millisecond) // a caller's pace, not a hot loop
			return false
		}
		require.False(t, r.Allowed, "the bucket survived the restart: still empty")
		return true
	})
	t.Logf("down %s: %s per call with pool.ErrUnavailable (%d of 1000); Redis answered again %s after it was back",
		restarted.Sub(stopped).Round(time.Millisecond), perCall, fast, time.Since(restarted).Round(time.Millisecond))
	require.True(t, p.Healthy())

	clk.Advance(12 * time.Second)
	r, err := l.Allow(ctx, "user")
	require.NoError(t, err)
	require.True(t, r.Allowed, "one event per 12s")
	testutil.Eventually(t, testutil.Wait, "goroutines back to before", func() bool { return runtime.NumGoroutine() <= goroutines+1 })
}
