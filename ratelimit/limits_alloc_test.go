package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// TestAllowLimitsAllocatesLikeAllow: the paths that answer without Redis,
// the denied cache and the policy while Redis is marked down, allocate
// nothing for Allow (BenchmarkHotDeniedKey, BenchmarkRedisDown), and a call
// with limits given per call must not add to that: checking a Limit is
// arithmetic, not formatting (docs/ratelimit.md: "Converting a Limit to GCRA
// units costs a gcd").
func TestAllowLimitsAllocatesLikeAllow(t *testing.T) {
	ctx := context.Background()
	two := []Limit{PerHour(1), PerDay(10)}
	calls := []struct {
		name  string
		allow func(l *Limiter) (Result, error)
	}{
		{"allow", func(l *Limiter) (Result, error) { return l.Allow(ctx, "k") }},
		{"one-limit", func(l *Limiter) (Result, error) { return l.AllowLimits(ctx, "k", 1, PerHour(1)) }},
		{"two-limits", func(l *Limiter) (Result, error) { return l.AllowLimits(ctx, "k", 1, two...) }},
	}
	t.Run("denied-cache", func(t *testing.T) {
		for _, c := range calls {
			_, p := mini(t)
			l := newLimiter(t, p, "alloc-denied", Config{Rate: 1, Period: time.Hour, Now: testutil.NewClock().Now})
			for range 2 {
				_, err := c.allow(l)
				require.NoError(t, err)
			}
			r, err := c.allow(l)
			require.NoError(t, err)
			require.Equal(t, SourceDeniedCache, r.Source, c.name)
			allocs := testing.AllocsPerRun(100, func() { _, _ = c.allow(l) })
			require.Zero(t, allocs, "%s: allocations per denied-cache answer", c.name)
		}
	})
	t.Run("redis-down", func(t *testing.T) {
		for _, policy := range []Policy{FailOpen, FailClosed, FailLocal} {
			d := newDownSetup(t, Config{Rate: 1, Period: time.Hour, OnRedisError: policy, NoDeniedCache: true})
			d.stop(t)
			for _, c := range calls {
				r, err := c.allow(d.l)
				require.NoError(t, err)
				require.Equal(t, SourceFallback, r.Source)
				allocs := testing.AllocsPerRun(100, func() { _, _ = c.allow(d.l) })
				require.Zero(t, allocs, "%s, %s: allocations per answer while Redis is down", policy, c.name)
			}
		}
	})
}
