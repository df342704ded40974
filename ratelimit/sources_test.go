package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStatsBySource: every decision is counted once under the source that
// made it, and the split adds up to Allowed and Denied.
func TestStatsBySource(t *testing.T) {
	d := newDownSetup(t, Config{Rate: 1, Period: time.Minute, Burst: 2, DeniedKeys: 10, OnRedisError: FailLocal})
	require.Equal(t, Stats{}, d.l.Stats(), "a new limiter counted nothing")

	ctx := context.Background()
	allow := func(key string, want Source) Result {
		t.Helper()
		r, err := d.l.Allow(ctx, key)
		require.NoError(t, err)
		require.Equal(t, want, r.Source)
		return r
	}
	allow("k", SourceRedis)       // allowed
	allow("k", SourceRedis)       // allowed: the burst
	allow("k", SourceRedis)       // denied, and cached
	allow("k", SourceDeniedCache) // denied without Redis
	d.stop(t)                     // one redis allowed ("warm"), one fallback allowed
	allow("j", SourceFallback)    // allowed locally
	allow("j", SourceFallback)
	allow("j", SourceFallback) // denied locally

	s := d.l.Stats()
	require.Equal(t, [2]uint64{3, 1}, [2]uint64{s.RedisAllowed, s.RedisDenied})
	require.Equal(t, uint64(1), s.DeniedCache)
	require.Equal(t, [2]uint64{3, 1}, [2]uint64{s.FallbackAllowed, s.FallbackDenied})
	require.Equal(t, s.Allowed, s.RedisAllowed+s.FallbackAllowed)
	require.Equal(t, s.Denied, s.RedisDenied+s.DeniedCache+s.FallbackDenied)
	require.Equal(t, s.Fallback, s.FallbackAllowed+s.FallbackDenied)
}

func TestBySourceIgnoresOtherSources(t *testing.T) {
	var b bySource
	b.count(Result{})                                   // the zero Result: no source
	b.count(Result{Allowed: true, Source: Source(200)}) // unknown: not counted
	b.count(Result{Source: SourceDeniedCache})          // counted in DeniedCache by the caller
	var s Stats
	b.fill(&s)
	require.Equal(t, Stats{}, s)
}
