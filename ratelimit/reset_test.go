package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestReset: Reset deletes every window of a key in Redis and its denied
// cache entry, and no other key's state; the key's next calls find full
// buckets.
func TestReset(t *testing.T) { onBoth(t, testReset) }

func testReset(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "reset", Config{Rate: 1, Period: time.Hour, Now: clk.Now})
	keepState(t, l)
	ctx := context.Background()
	limits := []Limit{PerMinute(1), PerHour(2), PerDay(3), {Rate: 4, Period: 7 * 24 * time.Hour}}
	for _, key := range []string{"k", "other"} {
		r, err := l.AllowLimits(ctx, key, 1, limits...)
		require.NoError(t, err)
		require.True(t, r.Allowed)
		r, err = l.AllowLimits(ctx, key, 1, limits...)
		require.NoError(t, err)
		require.False(t, r.Allowed)
	}
	r, err := l.AllowLimits(ctx, "k", 1, limits...)
	require.NoError(t, err)
	require.Equal(t, SourceDeniedCache, r.Source)
	for i := range MaxWindows {
		require.Equal(t, int64(1), p.Client().Exists(ctx, l.windowKey("k", i)).Val(), "window %d", i)
	}

	require.NoError(t, l.Reset(ctx, "k"))
	for i := range MaxWindows {
		require.Zero(t, p.Client().Exists(ctx, l.windowKey("k", i)).Val(), "window %d", i)
		require.Equal(t, int64(1), p.Client().Exists(ctx, l.windowKey("other", i)).Val(), "window %d of another key", i)
	}
	r, err = l.AllowLimits(ctx, "k", 1, limits...)
	require.NoError(t, err)
	require.Equal(t, Result{Allowed: true, ResetAfter: time.Minute, Limit: 1, Source: SourceRedis}, r, "full again, Redis asked")
	r, err = l.Allow(ctx, "k")
	require.NoError(t, err)
	require.False(t, r.Allowed, "the first window is Allow's")
	r, err = l.AllowLimits(ctx, "other", 1, limits...)
	require.NoError(t, err)
	require.False(t, r.Allowed, "another key is untouched")

	// A key with no state, and a key Allow alone used.
	require.NoError(t, l.Reset(ctx, "never"))
	require.NoError(t, l.Reset(ctx, "k"))
	r, err = l.Allow(ctx, "k")
	require.NoError(t, err)
	require.True(t, r.Allowed)

	require.ErrorIs(t, l.Reset(ctx, ""), ErrInvalidArgument)
}

// TestResetWhileRedisDown: Reset forgets FailLocal's bucket and the denied
// cache even when Redis cannot be reached, and says Redis was not.
func TestResetWhileRedisDown(t *testing.T) {
	d := newDownSetup(t, Config{Rate: 1, Period: time.Hour})
	ctx := context.Background()
	for range 2 {
		_, err := d.l.Allow(ctx, "abuser")
		require.NoError(t, err)
	}
	d.stop(t)
	r, err := d.l.Allow(ctx, "abuser")
	require.NoError(t, err)
	require.Equal(t, SourceDeniedCache, r.Source)
	r, err = d.l.Allow(ctx, "k")
	require.NoError(t, err)
	require.True(t, r.Allowed)
	r, err = d.l.Allow(ctx, "k")
	require.NoError(t, err)
	require.False(t, r.Allowed)
	require.Equal(t, SourceFallback, r.Source)

	for _, key := range []string{"k", "abuser"} {
		err = d.l.Reset(ctx, key)
		require.ErrorIs(t, err, pool.ErrUnavailable)
		require.ErrorContains(t, err, `ratelimit: down "`+key+`": reset`)
		r, err = d.l.Allow(ctx, key)
		require.NoError(t, err)
		require.True(t, r.Allowed, "%s: local state forgotten", key)
		require.Equal(t, SourceFallback, r.Source)
	}
	require.Zero(t, d.l.Stats().DeniedKeys)
}

// TestResetContextEnded: a caller whose context has ended gets its error.
func TestResetContextEnded(t *testing.T) {
	_, p := mini(t)
	l := newLimiter(t, p, "reset-ctx", Config{Rate: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, l.Reset(ctx, "k"), context.Canceled)
}
