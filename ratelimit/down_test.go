package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// downSetup is a limiter on a real server that the test stops and starts,
// with a pool that marks Redis down after one failure and probes only when
// the test moves the pool's clock.
type downSetup struct {
	srv  *redistest.Redis
	p    *pool.Pool
	pclk *testutil.Clock // the pool's clock: probe interval
	clk  *testutil.Clock // the limiter's clock
	l    *Limiter
}

func newDownSetup(t *testing.T, cfg Config) *downSetup {
	d := &downSetup{srv: redistest.Server(t), pclk: testutil.NewClock(), clk: testutil.NewClock()}
	d.p = newPool(t, pool.Config{Addrs: []string{d.srv.Addr()}, FailureThreshold: 1, ProbeInterval: time.Minute, Now: d.pclk.Now})
	cfg.Now = d.clk.Now
	d.l = newLimiter(t, d.p, "down", cfg)
	keepState(t, d.l)
	return d
}

// stop stops Redis and makes the limiter notice: the first call fails on the
// wire, is answered by the policy with that failure, and marks Redis down.
func (d *downSetup) stop(t *testing.T) {
	r, err := d.l.Allow(context.Background(), "warm")
	require.NoError(t, err)
	require.Equal(t, SourceRedis, r.Source)
	require.NoError(t, d.srv.Stop())
	errs := d.l.Stats().RedisErrors
	r, err = d.l.Allow(context.Background(), "warm")
	require.NoError(t, err)
	require.Equal(t, SourceFallback, r.Source)
	require.Error(t, r.Err)
	require.False(t, errors.Is(r.Err, pool.ErrUnavailable), "this call reached the wire: %v", r.Err)
	require.Equal(t, errs+1, d.l.Stats().RedisErrors)
	require.False(t, d.p.Healthy())
}

// TestRedisDownPolicies: while Redis is down each policy answers without a
// dial or a command (the pool's health decides in microseconds), with the
// numbers the policy promises.
func TestRedisDownPolicies(t *testing.T) {
	for _, c := range []struct {
		policy Policy
		check  func(t *testing.T, i int, r Result)
	}{
		{FailOpen, func(t *testing.T, i int, r Result) {
			require.Equal(t, Result{Allowed: true, Remaining: 2, ResetAfter: 100 * time.Millisecond, Limit: 3, Source: SourceFallback, Err: r.Err}, r)
		}},
		{FailClosed, func(t *testing.T, i int, r Result) {
			require.Equal(t, Result{RetryAfter: 100 * time.Millisecond, ResetAfter: 300 * time.Millisecond, Limit: 3, Source: SourceFallback, Err: r.Err}, r)
		}},
		{FailLocal, func(t *testing.T, i int, r Result) {
			// The same GCRA in process memory: exactly the burst, then denials.
			if i < 3 {
				require.Equal(t, Result{Allowed: true, Remaining: 2 - i, ResetAfter: time.Duration(i+1) * 100 * time.Millisecond,
					Limit: 3, Source: SourceFallback, Err: r.Err}, r)
				return
			}
			require.Equal(t, Result{RetryAfter: 100 * time.Millisecond, ResetAfter: 300 * time.Millisecond, Limit: 3,
				Source: SourceFallback, Err: r.Err}, r)
		}},
	} {
		t.Run(c.policy.String(), func(t *testing.T) {
			d := newDownSetup(t, Config{Rate: 10, Burst: 3, OnRedisError: c.policy})
			d.stop(t)
			dialsBefore, errsBefore := dials(d.p), d.l.Stats().RedisErrors
			var slowest time.Duration
			for i := range 1000 {
				start := time.Now()
				r, err := d.l.Allow(context.Background(), "k")
				slowest = max(slowest, time.Since(start))
				require.NoError(t, err)
				require.ErrorIs(t, r.Err, pool.ErrUnavailable)
				c.check(t, i, r)
			}
			require.Equal(t, dialsBefore, dials(d.p), "no dial while Redis is marked down")
			require.Equal(t, errsBefore, d.l.Stats().RedisErrors, "no call reached the wire")
			require.Equal(t, uint64(1001), d.l.Stats().Fallback)
			t.Logf("%s: slowest of 1000 calls with Redis down: %s", c.policy, slowest)

			if c.policy == FailLocal {
				d.clk.Advance(100 * time.Millisecond)
				r, err := d.l.Allow(context.Background(), "k")
				require.NoError(t, err)
				require.True(t, r.Allowed, "one interval later, one more")
			}

			// Redis back: the next probe (one per ProbeInterval of the pool's
			// clock) reaches it, and Redis decides again.
			d.srv.Start()
			r, err := d.l.Allow(context.Background(), "k")
			require.NoError(t, err)
			require.Equal(t, SourceFallback, r.Source, "no probe before the interval")
			d.pclk.Advance(time.Minute)
			r, err = d.l.Allow(context.Background(), "k")
			require.NoError(t, err)
			require.Equal(t, SourceRedis, r.Source, "the probe: %v", r.Err)
			require.True(t, d.p.Healthy())
			r, err = d.l.Allow(context.Background(), "k")
			require.NoError(t, err)
			require.Equal(t, SourceRedis, r.Source)
		})
	}
}

// TestFailLocalBounded: FailLocal tracks at most Config.LocalKeys keys; a
// forgotten key starts again with a full bucket.
func TestFailLocalBounded(t *testing.T) {
	d := newDownSetup(t, Config{Rate: 1, Period: time.Minute, Burst: 2, LocalKeys: 5})
	d.stop(t)
	for i := range 50 {
		d.clk.Advance(time.Millisecond)
		for range 3 {
			_, err := d.l.Allow(context.Background(), fmt.Sprint("k", i))
			require.NoError(t, err)
		}
		require.LessOrEqual(t, d.l.Stats().LocalKeys, 5)
	}
	s := d.l.Stats()
	require.Equal(t, 5, s.LocalKeys)
	require.Equal(t, uint64(46), s.LocalEvictions) // "warm" and k0..k44
	require.Equal(t, uint64(50*2), s.Allowed-2)    // two "warm" calls before
	r, err := d.l.Allow(context.Background(), "k0")
	require.NoError(t, err)
	require.True(t, r.Allowed, "k0 was forgotten")
}

// TestDeniedCacheOutlivesRedis: a key Redis denied stays denied from the
// cache while Redis is down, whatever the policy (here FailOpen).
func TestDeniedCacheOutlivesRedis(t *testing.T) {
	d := newDownSetup(t, Config{Rate: 1, Period: time.Minute, OnRedisError: FailOpen})
	ctx := context.Background()
	for range 2 {
		_, err := d.l.Allow(ctx, "abuser")
		require.NoError(t, err)
	}
	d.stop(t)
	r, err := d.l.Allow(ctx, "abuser")
	require.NoError(t, err)
	require.False(t, r.Allowed)
	require.Equal(t, SourceDeniedCache, r.Source)
	r, err = d.l.Allow(ctx, "someone")
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, SourceFallback, r.Source)
}
