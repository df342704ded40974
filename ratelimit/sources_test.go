package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func bySourceOf(s Stats) map[string][2]uint64 {
	m := map[string][2]uint64{}
	for _, b := range s.BySource {
		m[b.Source] = [2]uint64{b.Allowed, b.Denied}
	}
	return m
}

// TestStatsBySource: every decision is counted once under the source that
// made it, and the split adds up to Allowed and Denied.
func TestStatsBySource(t *testing.T) {
	d := newDownSetup(t, Config{Rate: 1, Period: time.Minute, Burst: 2, DeniedKeys: 10, OnRedisError: FailLocal})
	s := d.l.Stats()
	require.Len(t, s.BySource, 3, "a new limiter lists every source")
	for _, b := range s.BySource {
		require.Zero(t, b.Allowed+b.Denied, b.Source)
	}

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

	s = d.l.Stats()
	got := bySourceOf(s)
	require.Equal(t, [2]uint64{3, 1}, got["redis"])
	require.Equal(t, [2]uint64{0, 1}, got["denied-cache"])
	require.Equal(t, [2]uint64{3, 1}, got["fallback"])
	var allowed, denied uint64
	for _, b := range s.BySource {
		allowed, denied = allowed+b.Allowed, denied+b.Denied
	}
	require.Equal(t, s.Allowed, allowed)
	require.Equal(t, s.Denied, denied)
	require.Equal(t, s.DeniedCache, got["denied-cache"][1])
	require.Equal(t, s.Fallback, got["fallback"][0]+got["fallback"][1])
}

func TestBySourceIgnoresNoSource(t *testing.T) {
	var b bySource
	b.count(Result{})                                   // the zero Result: no source
	b.count(Result{Allowed: true, Source: Source(200)}) // unknown: not counted, no panic
	for _, s := range b.stats() {
		require.Zero(t, s.Allowed+s.Denied, s.Source)
	}
}
