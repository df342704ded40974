package ratelimit

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// ratLimitOfLimit is a Limit in the model's terms, its defaults filled in.
func ratLimitOfLimit(lim Limit) ratLimit {
	if lim.Period == 0 {
		lim.Period = DefaultPeriod
	}
	if lim.Burst == 0 {
		lim.Burst = lim.Rate
	}
	return ratLimitOf(Config{Rate: lim.Rate, Period: lim.Period, Burst: lim.Burst})
}

// ratKey is the model's name for window i of key.
func ratKey(key string, i int) string { return fmt.Sprint(key, "#", i) }

// allowAll answers n events for key under every one of lims, window i on
// its own state, from the definition: admitted only if every window admits
// n (and then every window moves), else nothing moves. The most restrictive
// window reports: when admitted, the fewest Remaining (ties: the longer
// ResetAfter, then the first); when denied, the longest RetryAfter (ties:
// the first); Remaining is the least of all either way.
func (m *ratGCRA) allowAll(lims []ratLimit, key string, now int64, n int) Result {
	nowR := new(big.Rat).SetInt64(now)
	xs := make([]*big.Rat, len(lims))
	nxs := make([]*big.Rat, len(lims))
	allowed := true
	for i, lim := range lims {
		xs[i] = new(big.Rat)
		if tat, ok := m.tats[ratKey(key, i)]; ok && tat.Cmp(nowR) > 0 {
			xs[i] = ratSub(tat, nowR)
		}
		nxs[i] = new(big.Rat).Add(xs[i], new(big.Rat).Mul(lim.t, big.NewRat(int64(n), 1)))
		allowed = allowed && nxs[i].Cmp(lim.span) <= 0
	}
	rs := make([]Result, len(lims))
	for i, lim := range lims {
		r := Result{Limit: lim.burst, Source: SourceRedis, Window: i}
		if allowed {
			m.tats[ratKey(key, i)] = new(big.Rat).Add(nowR, nxs[i])
			r.Allowed = true
			r.Remaining = int(ratFloor(new(big.Rat).Quo(ratSub(lim.span, nxs[i]), lim.t)))
			r.ResetAfter = us(ratCeil(nxs[i]))
		} else {
			r.Remaining = int(max(0, ratFloor(new(big.Rat).Quo(ratSub(lim.span, xs[i]), lim.t))))
			if nxs[i].Cmp(lim.span) > 0 {
				r.RetryAfter = us(ratCeil(ratSub(nxs[i], lim.span)))
			}
			r.ResetAfter = us(ratCeil(xs[i]))
		}
		rs[i] = r
	}
	best, least := rs[0], rs[0].Remaining
	for _, r := range rs[1:] {
		least = min(least, r.Remaining)
		if allowed && (r.Remaining < best.Remaining || r.Remaining == best.Remaining && r.ResetAfter > best.ResetAfter) ||
			!allowed && r.RetryAfter > best.RetryAfter {
			best = r
		}
	}
	best.Remaining = least
	return best
}

// windowCandidates are the limits each window position switches between
// from call to call (a caller changing plans): units of whole µs, thirds,
// sevenths, thirteenths and 999,983ths of a µs, windows from a second to an
// hour.
var windowCandidates = [][]Limit{
	{{Rate: 3, Burst: 3}, {Rate: 10, Burst: 4}, {Rate: 7, Period: 90 * time.Second, Burst: 5}},
	{{Rate: 13, Period: 2 * time.Second, Burst: 6}, {Rate: 6, Period: 7 * time.Second, Burst: 2}, {Rate: 1, Period: 3 * time.Second, Burst: 1}},
	{{Rate: 999_983, Period: time.Hour, Burst: 1000}, {Rate: 7, Period: 90 * time.Second, Burst: 5}},
	{{Rate: 20, Period: time.Minute}},
}

// TestWindowsMatchRationalModel replays random AllowLimits sequences, with
// one to four windows whose limits change from call to call, mixed with
// AllowN calls on the Limiter's own limit (the first window's state),
// against the exact rational model: every field of every Result agrees,
// Window included. Instants are random, or the first µs the model admits
// the call at, or the one before.
func TestWindowsMatchRationalModel(t *testing.T) { onBoth(t, testWindowsMatchRationalModel) }

func testWindowsMatchRationalModel(t *testing.T, b backend) {
	p := b.newPool(t)
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, seed))
			clk := testutil.NewClock()
			own := modelConfigs[int(seed)%len(modelConfigs)]
			cfg := own
			cfg.Now, cfg.NoDeniedCache = clk.Now, true
			l := newLimiter(t, p, fmt.Sprint("windows-", seed), cfg)
			keepState(t, l)
			m := &ratGCRA{tats: map[string]*big.Rat{}}
			// The plan of each position, changed now and then.
			plan := make([]Limit, MaxWindows)
			for i := range plan {
				plan[i] = windowCandidates[i][rng.IntN(len(windowCandidates[i]))]
			}
			admitted, laterDenied := 0, 0
			for j := range 500 {
				if rng.IntN(10) == 0 {
					i := rng.IntN(MaxWindows)
					plan[i] = windowCandidates[i][rng.IntN(len(windowCandidates[i]))]
				}
				key := fmt.Sprint("k", rng.IntN(2))
				var limits []Limit
				var lims []ratLimit
				if rng.IntN(6) == 0 { // AllowN: the Limiter's own limit, first window
					lims = []ratLimit{ratLimitOf(own)}
				} else {
					limits = plan[:1+rng.IntN(MaxWindows)]
					for _, lim := range limits {
						lims = append(lims, ratLimitOfLimit(lim))
					}
				}
				least := lims[0].burst
				for _, lim := range lims {
					least = min(least, lim.burst)
				}
				n := 1 + rng.IntN(least)
				now := clk.Now().UnixMicro()
				switch rng.IntN(4) {
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
				clk.Set(time.UnixMicro(now))
				var got Result
				var err error
				if limits == nil {
					got, err = l.AllowN(context.Background(), key, n)
				} else {
					got, err = l.AllowLimits(context.Background(), key, n, limits...)
				}
				require.NoError(t, err)
				want := m.allowAll(lims, key, now, n)
				require.Equal(t, want, got, "call %d: %v (nil: AllowN) %s n=%d at %d µs", j, limits, key, n, now)
				if got.Allowed {
					admitted++
				} else if got.Window > 0 {
					laterDenied++
				}
			}
			// Both kinds of answer, and denials decided by a later window.
			require.Positive(t, admitted)
			require.Positive(t, laterDenied)
			require.Less(t, admitted, 500)
		})
	}
}

// TestWindowsAllOrNone: two windows, 2 per second and 3 per hour, step by
// step; a denial by either window counts in neither (the state in Redis is
// unchanged), and the Result is the most restrictive window's.
func TestWindowsAllOrNone(t *testing.T) { onBoth(t, testWindowsAllOrNone) }

func testWindowsAllOrNone(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "all-or-none", Config{Rate: 1, Now: clk.Now})
	keepState(t, l)
	ctx := context.Background()
	limits := []Limit{{Rate: 2, Period: time.Second}, {Rate: 3, Period: time.Hour}}
	state := func() [2]string {
		var s [2]string
		for i := range s {
			s[i], _ = p.Client().Get(ctx, l.windowKey("k", i)).Result()
		}
		return s
	}
	for i, c := range []struct {
		at   time.Duration
		want Result
	}{
		{0, Result{Allowed: true, Remaining: 1, ResetAfter: 500 * time.Millisecond, Limit: 2}},
		{0, Result{Allowed: true, Remaining: 0, ResetAfter: time.Second, Limit: 2}},
		// The second's window denies; the hour's would admit.
		{0, Result{Remaining: 0, RetryAfter: 500 * time.Millisecond, ResetAfter: time.Second, Limit: 2}},
		// Both admit, both then at 0: the hour's is full again later.
		{500 * time.Millisecond, Result{Allowed: true, Remaining: 0, ResetAfter: 3599500 * time.Millisecond, Limit: 3, Window: 1}},
		// The second's window admits; the hour's denies for 1199 s.
		{time.Second, Result{RetryAfter: 1199 * time.Second, ResetAfter: 3599 * time.Second, Limit: 3, Window: 1}},
		// From the denied cache: the same answer 1 s later, less 1 s.
		{2 * time.Second, Result{RetryAfter: 1198 * time.Second, ResetAfter: 3598 * time.Second, Limit: 3, Window: 1}},
	} {
		clk.Set(t0.Add(c.at))
		before := state()
		r, err := l.AllowLimits(ctx, "k", 1, limits...)
		require.NoError(t, err)
		c.want.Source = SourceRedis
		if i == 5 {
			c.want.Source = SourceDeniedCache
		}
		require.Equal(t, c.want, r, "step %d", i)
		if !r.Allowed {
			require.Equal(t, before, state(), "step %d: a denial wrote", i)
		}
	}
	// The first window is the key's own state: AllowN on the Limiter's
	// limit (1 per second, burst 1) reads what the windows wrote.
	r, err := l.Allow(ctx, "k")
	require.NoError(t, err)
	require.True(t, r.Allowed, "%+v", r)
}

// TestLimitChangesBetweenCalls: a key moved from one plan to another keeps
// what it spent (the instant), in both directions, exactly.
func TestLimitChangesBetweenCalls(t *testing.T) { onBoth(t, testLimitChangesBetweenCalls) }

func testLimitChangesBetweenCalls(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "plans", Config{Rate: 1, Now: clk.Now, NoDeniedCache: true})
	keepState(t, l)
	ctx := context.Background()
	free, pro := PerMinute(6), Limit{Rate: 60, Period: time.Minute, Burst: 30}
	r, err := l.AllowLimits(ctx, "acme", 6, free)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	// Upgraded: 60 s of free's spent are 60 of pro's 1 s events: 30 burst
	// minus 60 leaves none until 30 s have passed.
	r, err = l.AllowLimits(ctx, "acme", 1, pro)
	require.NoError(t, err)
	require.Equal(t, Result{RetryAfter: 31 * time.Second, ResetAfter: time.Minute, Limit: 30, Source: SourceRedis}, r)
	clk.Advance(31 * time.Second)
	r, err = l.AllowLimits(ctx, "acme", 1, pro)
	require.NoError(t, err)
	require.Equal(t, Result{Allowed: true, Remaining: 0, ResetAfter: 30 * time.Second, Limit: 30, Source: SourceRedis}, r)
	// Downgraded again: 30 s ahead is 3 of free's 10 s events.
	r, err = l.AllowLimits(ctx, "acme", 4, free)
	require.NoError(t, err)
	require.Equal(t, Result{Remaining: 3, RetryAfter: 10 * time.Second, ResetAfter: 30 * time.Second, Limit: 6, Source: SourceRedis}, r)
}

// TestAllowLimitsBadArguments: each bad limit is refused before Redis with
// an error naming the limit's position and field.
func TestAllowLimitsBadArguments(t *testing.T) {
	m, p := mini(t)
	l := newLimiter(t, p, "bad", Config{Rate: 1})
	ok := PerSecond(5)
	for _, c := range []struct {
		key    string
		n      int
		limits []Limit
		want   string
	}{
		{"", 1, []Limit{ok}, "bad: empty key"},
		{"k", 0, []Limit{ok}, "n must be at least 1, got 0"},
		{"k", -1, []Limit{ok}, "n must be at least 1, got -1"},
		{"k", 1, nil, "no limit given"},
		{"k", 1, []Limit{ok, ok, ok, ok, ok}, "5 limits, at most MaxWindows (4) at once"},
		{"k", 1, []Limit{{}}, "limits[0].Rate must be positive, got 0 (0 per 0s, burst 0)"},
		{"k", 1, []Limit{ok, {Rate: -1}}, "bad: limits[1].Rate must be positive, got -1 (-1 per 0s, burst 0)"},
		{"k", 1, []Limit{{Rate: 1, Period: -time.Second}}, "limits[0].Period must not be negative, got -1s"},
		{"k", 1, []Limit{{Rate: 1, Period: 1500 * time.Nanosecond}}, "limits[0].Period must be a whole number of microseconds, got 1.5µs"},
		{"k", 1, []Limit{{Rate: 1, Burst: -2}}, "limits[0].Burst must not be negative, got -2"},
		{"k", 6, []Limit{PerSecond(10), ok}, "n=6 exceeds limits[1].Burst of 5 and could never be admitted"},
		{"k", 1, []Limit{{Rate: 1, Period: 1000 * 24 * time.Hour, Burst: 1_000_000}}, "limits[0].Burst (1000000) times the emission interval"},
		{"k", 1, []Limit{{Rate: 1, Period: math.MaxInt64 / 1000 * 1000, Burst: 1}}, "Burst (1) times the emission interval"},
		{"k", 1, []Limit{{Rate: 1, Burst: math.MaxInt}}, "Burst (9223372036854775807) times the emission interval"},
	} {
		_, err := l.AllowLimits(context.Background(), c.key, c.n, c.limits...)
		require.ErrorIs(t, err, ErrInvalidArgument, c.want)
		require.ErrorContains(t, err, c.want)
	}
	require.Zero(t, m.CommandCount(), "refused before Redis")
}

// TestAllowLimitsEdgeValues: the defaults of a Limit's zero fields, burst 1,
// n equal to the burst, a rate past what a Lua number holds per µs (rounded
// to one event per µs), and a period of a year, on both backends.
func TestAllowLimitsEdgeValues(t *testing.T) { onBoth(t, testAllowLimitsEdgeValues) }

func testAllowLimitsEdgeValues(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "edges", Config{Rate: 1, Now: clk.Now, NoDeniedCache: true})
	keepState(t, l)
	ctx := context.Background()
	for i, c := range []struct {
		lim  Limit
		n    int
		want []Result
	}{
		// Period 0 is a second, Burst 0 is Rate.
		{Limit{Rate: 4}, 4, []Result{{Allowed: true, ResetAfter: time.Second, Limit: 4}, {RetryAfter: time.Second, ResetAfter: time.Second, Limit: 4}}},
		{Limit{Rate: 2, Burst: 1}, 1, []Result{{Allowed: true, ResetAfter: 500 * time.Millisecond, Limit: 1}, {RetryAfter: 500 * time.Millisecond, ResetAfter: 500 * time.Millisecond, Limit: 1}}},
		{Limit{Rate: math.MaxInt, Burst: 1}, 1, []Result{{Allowed: true, ResetAfter: time.Microsecond, Limit: 1}, {RetryAfter: time.Microsecond, ResetAfter: time.Microsecond, Limit: 1}}},
		{Limit{Rate: 1, Period: 365 * 24 * time.Hour, Burst: 2}, 2, []Result{
			{Allowed: true, ResetAfter: 2 * 365 * 24 * time.Hour, Limit: 2}, {RetryAfter: 2 * 365 * 24 * time.Hour, ResetAfter: 2 * 365 * 24 * time.Hour, Limit: 2}}},
	} {
		for j, want := range c.want {
			r, err := l.AllowLimits(ctx, fmt.Sprint("k", i), c.n, c.lim)
			require.NoError(t, err)
			want.Source = SourceRedis
			require.Equal(t, want, r, "%v call %d", c.lim, j)
		}
	}
}

// TestWindowKeysShareOneHashTag: every window of a key is in the limiter's
// hash tag (one Cluster slot), and no window's key is another's.
func TestWindowKeysShareOneHashTag(t *testing.T) {
	_, p := mini(t)
	l := newLimiter(t, p, "api", Config{Rate: 1})
	seen := map[string]bool{}
	for i := range MaxWindows {
		for _, key := range []string{"k", "#1:k", ":k", "1:k"} {
			k := l.windowKey(key, i)
			require.True(t, strings.HasPrefix(k, "{rl:api}"), k)
			require.False(t, seen[k], "%q twice", k)
			seen[k] = true
		}
	}
	require.Equal(t, "{rl:api}:k", l.windowKey("k", 0))
	require.Equal(t, "{rl:api}#3:k", l.windowKey("k", 3))
}

// TestDeniedCacheOnlyForTheSameLimit: a key denied under one limit given
// per call is answered by the cache for that limit at that position only; a
// call with another limit asks Redis.
func TestDeniedCacheOnlyForTheSameLimit(t *testing.T) {
	m, p := mini(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "cache-limits", Config{Rate: 1, Now: clk.Now})
	ctx := context.Background()
	// pro's span, 2 h, holds the hour free's one event stands for.
	free, pro := PerHour(1), Limit{Rate: 100, Period: time.Hour, Burst: 200}
	_, err := l.AllowLimits(ctx, "k", 1, free)
	require.NoError(t, err)
	r, err := l.AllowLimits(ctx, "k", 1, free)
	require.NoError(t, err)
	require.Equal(t, SourceRedis, r.Source)
	cmds := m.CommandCount()
	r, err = l.AllowLimits(ctx, "k", 1, free)
	require.NoError(t, err)
	require.Equal(t, Result{RetryAfter: time.Hour, ResetAfter: time.Hour, Limit: 1, Source: SourceDeniedCache}, r)
	require.Equal(t, cmds, m.CommandCount())
	// Another plan: Redis decides, and admits.
	r, err = l.AllowLimits(ctx, "k", 1, pro)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, SourceRedis, r.Source)
	// The same limit at another position is another state.
	r, err = l.AllowLimits(ctx, "k", 1, pro, free)
	require.NoError(t, err)
	require.Equal(t, SourceRedis, r.Source)
	require.True(t, r.Allowed)
	r, err = l.AllowLimits(ctx, "k", 1, pro, free)
	require.NoError(t, err)
	require.Equal(t, Result{RetryAfter: time.Hour, ResetAfter: time.Hour, Limit: 1, Source: SourceRedis, Window: 1}, r)
	r, err = l.AllowLimits(ctx, "k", 1, pro, free)
	require.NoError(t, err)
	require.Equal(t, Result{RetryAfter: time.Hour, ResetAfter: time.Hour, Limit: 1, Source: SourceDeniedCache, Window: 1}, r)
}

// TestWindowsStateTTL: each window's state lives until that window is full
// again (its own PX, the ResetAfter rounded up to ms), exactly on
// miniredis; FastForward past the shorter drops only its key.
func TestWindowsStateTTL(t *testing.T) {
	m, p := mini(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "windows-ttl", Config{Rate: 1, Now: clk.Now, NoDeniedCache: true})
	_, err := l.AllowLimits(context.Background(), "k", 3, Limit{Rate: 7, Period: 90 * time.Second}, PerHour(10))
	require.NoError(t, err)
	require.Equal(t, 38_572*time.Millisecond, m.TTL(l.windowKey("k", 0)))
	require.Equal(t, fmt.Sprintf("%d 4.7", t0.UnixMicro()+38_571_428), mustGet(t, m, l.windowKey("k", 0)), "µs and 4/7 µs")
	require.Equal(t, 1080*time.Second, m.TTL(l.windowKey("k", 1)))
	require.Equal(t, fmt.Sprint(t0.UnixMicro()+1_080_000_000), mustGet(t, m, l.windowKey("k", 1)))
	m.FastForward(38_572 * time.Millisecond)
	require.False(t, m.Exists(l.windowKey("k", 0)))
	require.True(t, m.Exists(l.windowKey("k", 1)))
}

// TestWindowsDenialWritesNothing_Server: on a real server, which counts the
// commands scripts run, a call of two windows reads both and writes both
// when admitted, and a denial by either writes nothing.
func TestWindowsDenialWritesNothing_Server(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	clk := testutil.NewClock()
	l := newLimiter(t, p, "windows-writes", Config{Rate: 1, Now: clk.Now, NoDeniedCache: true})
	keepState(t, l)
	ctx := context.Background()
	calls := func() map[string]int64 {
		st, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return st
	}
	before := calls()
	limits := []Limit{PerSecond(2), PerHour(3)}
	for i, want := range []bool{true, true, false, false, true, false} {
		if i == 4 {
			clk.Advance(time.Second) // the second's window admits again, the hour's once more
		}
		r, err := l.AllowLimits(ctx, "k", 1, limits...)
		require.NoError(t, err)
		require.Equal(t, want, r.Allowed, "call %d", i)
	}
	after := calls()
	require.Equal(t, int64(12), after["get"]-before["get"])
	require.Equal(t, int64(6), after["set"]-before["set"], "three admissions, two windows each")
	require.Zero(t, after["time"]-before["time"])
}
