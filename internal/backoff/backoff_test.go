package backoff

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestExp(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		n        int
		min, max time.Duration
		want     time.Duration
	}{
		{0, 10 * ms, time.Second, 10 * ms},
		{1, 10 * ms, time.Second, 10 * ms},
		{2, 10 * ms, time.Second, 20 * ms},
		{7, 10 * ms, time.Second, 640 * ms},
		{8, 10 * ms, time.Second, time.Second},
		{math.MaxInt, 10 * ms, time.Second, time.Second},
		{1, time.Duration(math.MaxInt64/2 + 1), time.Duration(math.MaxInt64), time.Duration(math.MaxInt64/2 + 1)},
		{math.MaxInt, time.Duration(math.MaxInt64/2 + 1), time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)},
		{3, 3 * ms, 10 * ms, 10 * ms},
		{5, 0, time.Second, 0},
		{5, time.Second, ms, ms},
	} {
		require.Equal(t, tc.want, Exp(tc.n, tc.min, tc.max), "Exp(%d, %s, %s)", tc.n, tc.min, tc.max)
	}
	// Doubling past MaxInt64 caps instead of wrapping.
	require.Equal(t, time.Duration(math.MaxInt64), Exp(100, time.Duration(math.MaxInt64/3), time.Duration(math.MaxInt64)))
}

func TestJitterRanges(t *testing.T) {
	for _, d := range []time.Duration{1, 2, 3, time.Millisecond, time.Second, time.Duration(math.MaxInt64)} {
		lo, hi := d, time.Duration(0)
		for range 2000 {
			e := Equal(d)
			require.GreaterOrEqual(t, e, d/2)
			require.LessOrEqual(t, e, d)
			lo, hi = min(lo, e), max(hi, e)
			f := Full(d)
			require.GreaterOrEqual(t, f, time.Duration(0))
			require.Less(t, f, d)
		}
		if d >= time.Millisecond {
			require.Less(t, lo, d/2+d/8, "Equal(%s) never drew near its low end", d)
			require.Greater(t, hi, d-d/8, "Equal(%s) never drew near its high end", d)
		}
	}
	require.Zero(t, Equal(0))
	require.Zero(t, Full(-1))
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond}
	for i, max := range []time.Duration{10, 20, 40, 40, 40} {
		d := b.Next()
		require.LessOrEqual(t, d, max*time.Millisecond, "call %d", i+1)
		require.GreaterOrEqual(t, d, max*time.Millisecond/2, "call %d", i+1)
	}
	require.Equal(t, 5, b.Failures())
	b.Reset()
	require.LessOrEqual(t, b.Next(), 10*time.Millisecond)
	var zero Backoff
	require.Zero(t, zero.Next())
}

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		require.True(t, Sleep(context.Background(), time.Minute))
		require.Equal(t, time.Minute, time.Since(start))

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		require.False(t, Sleep(ctx, time.Hour))
		require.Equal(t, time.Minute+time.Second, time.Since(start))
		require.False(t, Sleep(ctx, 0), "a done ctx is reported even for no wait")

		b := Backoff{Min: time.Second, Max: time.Second}
		require.True(t, b.Wait(context.Background()))
		require.GreaterOrEqual(t, time.Since(start), time.Minute+time.Second+time.Second/2)
	})
}
