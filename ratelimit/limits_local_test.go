package ratelimit

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// TestLocalWindowsMatchRationalModel: FailLocal's arithmetic for several
// windows at once, each position on a fixed limit, against the exact
// rational model: every field of every Result agrees.
func TestLocalWindowsMatchRationalModel(t *testing.T) {
	_, p := mini(t)
	l := newLimiter(t, p, "local-windows", Config{Rate: 1})
	for seed := range uint64(8) {
		rng := rand.New(rand.NewPCG(22, seed))
		var limits []Limit
		var lims []ratLimit
		for i := range 1 + int(seed)%MaxWindows {
			lim := windowCandidates[i][rng.IntN(len(windowCandidates[i]))]
			limits = append(limits, lim)
			lims = append(lims, ratLimitOfLimit(lim))
		}
		least := lims[0].burst
		for _, lim := range lims {
			least = min(least, lim.burst)
		}
		var ws windows
		m := &ratGCRA{tats: map[string]*big.Rat{}}
		now := t0.UnixMicro()
		for j := range 1500 {
			key := fmt.Sprint("s", seed, "k", rng.IntN(3))
			n := 1 + rng.IntN(least)
			require.NoError(t, l.checkLimits(&ws, key, n, limits))
			switch rng.IntN(3) {
			case 0:
			case 1:
				now += rng.Int64N(2*ratCeil(lims[0].t) + 1)
			default:
				probe := &ratGCRA{tats: map[string]*big.Rat{}}
				for k, v := range m.tats {
					probe.tats[k] = v
				}
				if r := probe.allowAll(lims, key, now, n); !r.Allowed {
					now += r.RetryAfter.Microseconds() - rng.Int64N(2)
				}
			}
			got := l.allowLocal(key, int64(n), now, &ws)
			require.Equal(t, SourceFallback, got.Source)
			got.Source = SourceRedis
			require.Equal(t, m.allowAll(lims, key, now, n), got, "seed %d call %d: %v %s n=%d at %d µs", seed, j, limits, key, n, now)
		}
	}
}

// TestLocalChangedLimitNeverAdmitsEarly: FailLocal with limits that change
// from call to call reads a bucket's fraction of a µs rounded up to the
// reader's units (it keeps no common denominator, unlike the script): it
// never admits what exact GCRA denies, and denies what it admits only
// rarely, at the boundary.
func TestLocalChangedLimitNeverAdmitsEarly(t *testing.T) {
	_, p := mini(t)
	l := newLimiter(t, p, "local-changes", Config{Rate: 1})
	rng := rand.New(rand.NewPCG(23, 0))
	m := &ratGCRA{tats: map[string]*big.Rat{}}
	var ws windows
	now := t0.UnixMicro()
	admitted, strict := 0, 0
	const calls = 4000
	for j := range calls {
		var limits []Limit
		var lims []ratLimit
		for i := range 1 + rng.IntN(MaxWindows) {
			lim := windowCandidates[i][rng.IntN(len(windowCandidates[i]))]
			limits = append(limits, lim)
			lims = append(lims, ratLimitOfLimit(lim))
		}
		least := lims[0].burst
		for _, lim := range lims {
			least = min(least, lim.burst)
		}
		n := 1 + rng.IntN(least)
		require.NoError(t, l.checkLimits(&ws, "k", n, limits))
		if rng.IntN(2) == 0 {
			now += rng.Int64N(2*ratCeil(lims[0].t) + 1)
		} else {
			probe := &ratGCRA{tats: map[string]*big.Rat{}}
			for k, v := range m.tats {
				probe.tats[k] = v
			}
			if r := probe.allowAll(lims, "k", now, n); !r.Allowed {
				now += r.RetryAfter.Microseconds() - rng.Int64N(2)
			}
		}
		before := map[string]*big.Rat{}
		for k, v := range m.tats {
			before[k] = v
		}
		want := m.allowAll(lims, "k", now, n)
		got := l.allowLocal("k", int64(n), now, &ws)
		if got.Allowed {
			admitted++
			require.True(t, want.Allowed, "call %d: FailLocal admitted what exact GCRA denies", j)
		} else if want.Allowed {
			strict++
			m.tats = before // keep the model on FailLocal's side
		}
	}
	t.Logf("%d admitted, %d denied at a boundary the rounding moved", admitted, strict)
	require.Greater(t, admitted, calls/10)
	require.Less(t, strict, calls/20)
}

// TestFailLocalWindows: with Redis down, FailLocal decides several windows
// at once, all or none, and stays within Config.LocalKeys keys whatever the
// number of windows.
func TestFailLocalWindows(t *testing.T) {
	d := newDownSetup(t, Config{Rate: 1, LocalKeys: 3})
	d.stop(t)
	ctx := context.Background()
	limits := []Limit{{Rate: 2, Period: time.Second}, {Rate: 3, Period: time.Hour}}
	for i, want := range []Result{
		{Allowed: true, Remaining: 1, ResetAfter: 500 * time.Millisecond, Limit: 2},
		{Allowed: true, Remaining: 0, ResetAfter: time.Second, Limit: 2},
		{RetryAfter: 500 * time.Millisecond, ResetAfter: time.Second, Limit: 2},
	} {
		r, err := d.l.AllowLimits(ctx, "k", 1, limits...)
		require.NoError(t, err)
		require.ErrorIs(t, r.Err, pool.ErrUnavailable)
		want.Source, want.Err = SourceFallback, r.Err
		require.Equal(t, want, r, "call %d", i)
	}
	// The second's window denied the third call: the hour's did not count
	// it, so one second later the hour's third event passes, and the
	// fourth is denied by the hour.
	d.clk.Advance(time.Second)
	r, err := d.l.AllowLimits(ctx, "k", 1, limits...)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, 1, r.Window)
	r, err = d.l.AllowLimits(ctx, "k", 1, limits...)
	require.NoError(t, err)
	require.False(t, r.Allowed)
	require.Equal(t, 1, r.Window)
	require.Equal(t, 1199*time.Second, r.RetryAfter)

	for i := range 20 {
		_, err := d.l.AllowLimits(ctx, fmt.Sprint("u", i), 1, limits...)
		require.NoError(t, err)
		require.LessOrEqual(t, d.l.Stats().LocalKeys, 3)
	}
}
