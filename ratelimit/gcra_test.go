package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// step is one call at a fixed instant and what it must answer, exactly.
type step struct {
	at        time.Duration // since t0
	n         int
	allowed   bool
	remaining int
	retry     time.Duration
	reset     time.Duration
}

// admits returns the steps of k admissions of one event at instant at on an
// empty bucket of burst, each interval apart in ResetAfter (rounded up to µs).
func admits(at time.Duration, burst int, interval func(i int) time.Duration) []step {
	var s []step
	for i := 1; i <= burst; i++ {
		s = append(s, step{at: at, n: 1, allowed: true, remaining: burst - i, reset: interval(i)})
	}
	return s
}

var gcraTables = []struct {
	name  string
	cfg   Config
	steps []step
}{
	{
		name: "10 per second, burst 10",
		cfg:  Config{Rate: 10, Burst: 10},
		steps: append(admits(0, 10, func(i int) time.Duration { return time.Duration(i) * 100 * time.Millisecond }),
			step{at: 0, n: 1, retry: 100 * time.Millisecond, reset: time.Second},
			step{at: 100*time.Millisecond - time.Microsecond, n: 1, retry: time.Microsecond, reset: us(900_001)},
			step{at: 100 * time.Millisecond, n: 1, allowed: true, reset: time.Second},
			step{at: 100 * time.Millisecond, n: 1, retry: 100 * time.Millisecond, reset: time.Second},
			// 750ms from full: 3 would need 50ms more, 2 remain and pass.
			step{at: 350 * time.Millisecond, n: 3, remaining: 2, retry: 50 * time.Millisecond, reset: 750 * time.Millisecond},
			step{at: 350 * time.Millisecond, n: 2, allowed: true, reset: 950 * time.Millisecond},
			// Full again at 1.3s: the whole burst at once.
			step{at: 2 * time.Second, n: 10, allowed: true, reset: time.Second},
			step{at: 2 * time.Second, n: 1, retry: 100 * time.Millisecond, reset: time.Second},
		),
	},
	{
		// 12,857,142 6/7 µs per event: exact, not rounded to whole µs.
		name: "7 per 90s, burst 7",
		cfg:  Config{Rate: 7, Period: 90 * time.Second},
		steps: append(admits(0, 7, func(i int) time.Duration {
			return us([]int64{12_857_143, 25_714_286, 38_571_429, 51_428_572, 64_285_715, 77_142_858, 90_000_000}[i-1])
		}),
			step{at: 0, n: 1, retry: us(12_857_143), reset: 90 * time.Second},
			step{at: us(12_857_142), n: 1, retry: time.Microsecond, reset: us(77_142_858)},
			step{at: us(12_857_143), n: 1, allowed: true, reset: 90 * time.Second},
			// Eight events at exactly 8T: full again at 102,857,142 6/7 µs.
			step{at: us(102_857_142), n: 7, retry: time.Microsecond, remaining: 6, reset: us(1)},
			step{at: us(102_857_143), n: 7, allowed: true, reset: 90 * time.Second},
		),
	},
	{
		// A third of a second per event: Remaining is 9 after the first of a
		// burst of 10, where float state reports 8.
		name: "3 per second, burst 10",
		cfg:  Config{Rate: 3, Burst: 10},
		steps: append(admits(0, 10, func(i int) time.Duration {
			return us((int64(i)*1_000_000 + 2) / 3)
		}),
			step{at: 0, n: 1, retry: us(333_334), reset: us(3_333_334)},
			step{at: us(333_333), n: 1, retry: us(1), reset: us(3_000_001)},
			step{at: us(333_334), n: 1, allowed: true, reset: us(3_333_333)},
		),
	},
	{
		name: "n equal to the burst",
		cfg:  Config{Rate: 10, Burst: 10},
		steps: []step{
			{at: 0, n: 10, allowed: true, reset: time.Second},
			{at: 0, n: 10, retry: time.Second, reset: time.Second},
			{at: 50 * time.Millisecond, n: 1, retry: 50 * time.Millisecond, reset: 950 * time.Millisecond},
			{at: 500 * time.Millisecond, n: 10, remaining: 5, retry: 500 * time.Millisecond, reset: 500 * time.Millisecond},
			{at: time.Second, n: 10, allowed: true, reset: time.Second},
		},
	},
}

func TestGCRATables(t *testing.T) { onBoth(t, testGCRATables) }

func testGCRATables(t *testing.T, b backend) {
	p := b.newPool(t)
	for i, tc := range gcraTables {
		t.Run(tc.name, func(t *testing.T) {
			for _, cached := range []bool{false, true} {
				clk := testutil.NewClock()
				cfg := tc.cfg
				cfg.Now = clk.Now
				cfg.NoDeniedCache = !cached
				l := newLimiter(t, p, fmt.Sprintf("table-%d-%t", i, cached), cfg)
				keepState(t, l)
				fromCache := 0
				for j, s := range tc.steps {
					clk.Set(t0.Add(s.at))
					r, err := l.AllowN(context.Background(), "k", s.n)
					require.NoError(t, err)
					want := Result{Allowed: s.allowed, Remaining: s.remaining, RetryAfter: s.retry,
						ResetAfter: s.reset, Limit: l.cfg.Burst, Source: r.Source}
					require.Equal(t, want, r, "step %d (cache %t): %+v", j, cached, s)
					switch {
					case r.Source == SourceDeniedCache:
						require.True(t, cached)
						fromCache++
					default:
						require.Equal(t, SourceRedis, r.Source)
					}
				}
				if cached {
					require.Positive(t, fromCache, "the table has denials the cache should answer")
				}
			}
		})
	}
}

// TestBurstAdmitsExactlyBurst: a burst of 10 at one instant admits 10, not 9
// (redis_rate under miniredis) and not 11.
func TestBurstAdmitsExactlyBurst(t *testing.T) { onBoth(t, testBurstAdmitsExactlyBurst) }

func testBurstAdmitsExactlyBurst(t *testing.T, b backend) {
	p := b.newPool(t)
	for _, rate := range []int{1, 3, 7, 10, 1000} {
		clk := testutil.NewClock()
		l := newLimiter(t, p, fmt.Sprintf("burst-%d", rate), Config{Rate: rate, Period: time.Minute, Burst: 10, Now: clk.Now})
		keepState(t, l)
		admitted := 0
		for range 25 {
			r, err := l.Allow(context.Background(), "k")
			require.NoError(t, err)
			if r.Allowed {
				admitted++
			}
		}
		require.Equal(t, 10, admitted, "rate %d per minute", rate)
	}
}

// TestLongRunExact takes everything 7 per 90s admits, every 10s for 9000s:
// burst + 9000s/T = 7 + 700 events, and the TAT then is exactly 101 periods
// from t0. Rounding T down to whole µs would leave it 606 µs short.
func TestLongRunExact(t *testing.T) { onBoth(t, testLongRunExact) }

func testLongRunExact(t *testing.T, b backend) {
	clk := testutil.NewClock()
	l := newLimiter(t, b.newPool(t), "longrun", Config{Rate: 7, Period: 90 * time.Second, Now: clk.Now})
	keepState(t, l)
	admitted := 0
	var last Result
	for at := time.Duration(0); at <= 9000*time.Second; at += 10 * time.Second {
		clk.Set(t0.Add(at))
		for {
			r, err := l.Allow(context.Background(), "k")
			require.NoError(t, err)
			if !r.Allowed {
				last = r
				break
			}
			admitted++
		}
	}
	require.Equal(t, 707, admitted)
	require.Equal(t, 90*time.Second, last.ResetAfter, "TAT = t0 + 9090s exactly")
	require.Equal(t, us(12_857_143), last.RetryAfter)
}

// model is the Go arithmetic on a map: what Redis must answer.
type model struct {
	g    gcra
	tats map[string]localTAT
}

func (m *model) allow(key string, n, now int64) Result {
	t := m.tats[key]
	d := m.g.excess(t.us, t.rem, now)
	ok, nd := m.g.decide(d, n)
	if !ok {
		return m.g.denial(d, n, SourceRedis)
	}
	us, rem := m.g.tat(now, nd)
	m.tats[key] = localTAT{us: us, rem: rem}
	return m.g.admission(nd, SourceRedis)
}

// TestScriptMatchesModel replays random calls (keys, n, µs steps) against
// the script and the Go arithmetic, which must agree on every field.
func TestScriptMatchesModel(t *testing.T) { onBoth(t, testScriptMatchesModel) }

func testScriptMatchesModel(t *testing.T, b backend) {
	p := b.newPool(t)
	for i, cfg := range []Config{
		{Rate: 7, Period: 90 * time.Second, Burst: 5},
		{Rate: 3, Burst: 3},
		{Rate: 1000, Period: 7 * time.Second, Burst: 40},
		{Rate: 999_983, Period: time.Hour, Burst: 1000}, // prime rate: scale 999,983
	} {
		clk := testutil.NewClock()
		cfg.Now = clk.Now
		cfg.NoDeniedCache = true
		l := newLimiter(t, p, fmt.Sprintf("model-%d", i), cfg)
		keepState(t, l)
		m := &model{g: l.g, tats: map[string]localTAT{}}
		rng := rand.New(rand.NewPCG(1, uint64(i)))
		for j := range 400 {
			clk.Advance(time.Duration(rng.Int64N(int64(3*l.Interval()/time.Microsecond)+1)) * time.Microsecond)
			key := fmt.Sprint("k", rng.IntN(3))
			n := 1 + rng.IntN(l.cfg.Burst)
			got, err := l.AllowN(context.Background(), key, n)
			require.NoError(t, err)
			want := m.allow(key, int64(n), clk.Now().UnixMicro())
			require.Equal(t, want, got, "config %d call %d: %s n=%d", i, j, key, n)
		}
	}
}

// TestScriptMatchesModelAtExtremes: the script and the Go arithmetic agree
// where the numbers are largest: a clock that goes back far (TAT-now past
// maxUnits, which Go caps at 2*maxUnits rather than multiply out of a Lua
// number's exact range or past int64), a limit whose burst spans almost
// maxUnits, and instants near the end of the range a Lua number holds
// exactly.
func TestScriptMatchesModelAtExtremes(t *testing.T) { onBoth(t, testScriptMatchesModelAtExtremes) }

func testScriptMatchesModelAtExtremes(t *testing.T, b backend) {
	p := b.newPool(t)
	type call struct {
		at time.Time
		n  int
	}
	// Just past the cap for scale 7: TAT-now is maxUnits/7+1000 µs.
	past := func(scale int64) time.Time { return t0.Add(-us(maxUnits/scale + 1000)) }
	late := time.UnixMicro(1 << 53).Add(-24 * time.Hour) // a day before the last exact µs
	for i, tc := range []struct {
		name  string
		cfg   Config
		calls []call
	}{
		{"clock back just past the cap", Config{Rate: 7, Period: 90 * time.Second, Burst: 5},
			[]call{{t0, 3}, {past(7), 1}, {past(7), 5}, {t0, 1}}},
		{"clock back to 1900, large scale", Config{Rate: 999_983, Period: time.Hour, Burst: 1000},
			[]call{{t0, 1000}, {time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), 1}, {t0, 1}}},
		{"clock back to 1970, scale 1", Config{Rate: 10, Burst: 10},
			[]call{{t0, 10}, {time.UnixMicro(0), 10}, {time.UnixMicro(-1), 1}}},
		{"burst spanning almost maxUnits", Config{Rate: 1, Period: us(maxUnits / 1000), Burst: 1000},
			[]call{{t0, 1000}, {t0, 1000}, {t0, 1}, {t0.Add(-time.Hour), 1000}, {t0.Add(us(maxUnits / 1000)), 1}}},
		{"instants near 2^53 µs", Config{Rate: 7, Period: 90 * time.Second, Burst: 7},
			[]call{{late, 7}, {late, 1}, {late.Add(us(12_857_142)), 1}, {late.Add(us(12_857_143)), 1}, {t0, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := testutil.NewClock()
			cfg := tc.cfg
			cfg.Now = clk.Now
			cfg.NoDeniedCache = true
			l := newLimiter(t, p, fmt.Sprintf("extreme-%d", i), cfg)
			keepState(t, l)
			m := &model{g: l.g, tats: map[string]localTAT{}}
			for j, c := range tc.calls {
				clk.Set(c.at)
				got, err := l.AllowN(context.Background(), "k", c.n)
				require.NoError(t, err)
				want := m.allow("k", int64(c.n), c.at.UnixMicro())
				require.Equal(t, want, got, "call %d: n=%d at %d µs", j, c.n, c.at.UnixMicro())
			}
		})
	}
}

// TestStateExpires: the state key lives until the bucket is full again
// (PTTL = ResetAfter rounded up to ms), and is gone after.
func TestStateExpires(t *testing.T) { onBoth(t, testStateExpires) }

func testStateExpires(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "expiry", Config{Rate: 7, Period: 90 * time.Second, Now: clk.Now})
	ctx := context.Background()
	r, err := l.Allow(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, us(12_857_143), r.ResetAfter)
	pttl, err := p.Client().PTTL(ctx, l.Key("k")).Result()
	require.NoError(t, err)
	require.LessOrEqual(t, pttl, 12_858*time.Millisecond)
	require.Greater(t, pttl, 12_858*time.Millisecond-5*time.Second, "PTTL counts down from ResetAfter")

	if b.name == "miniredis" {
		return // its TTLs run down only when told (TestStateTTLMiniredis)
	}
	// A fast limit's state vanishes on its own within milliseconds.
	fast := newLimiter(t, p, "expiry-fast", Config{Rate: 1000, Burst: 5})
	r, err = fast.AllowN(ctx, "k", 5)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, 5*time.Millisecond, r.ResetAfter)
	testutil.Eventually(t, testutil.Wait, "the state key to expire on Redis's clock", func() bool {
		n, err := p.Client().Exists(ctx, fast.Key("k")).Result()
		require.NoError(t, err)
		return n == 0
	})

	// So does it with a clock held still (Config.Now): the state is gone
	// once its ResetAfter has passed in real time, and a call at the same
	// fixed instant finds a full bucket, as Config.Now says.
	clk = testutil.NewClock()
	held := newLimiter(t, p, "expiry-held", Config{Rate: 1000, Burst: 5, Now: clk.Now})
	r, err = held.AllowN(ctx, "k", 5)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	testutil.Eventually(t, testutil.Wait, "the state key to expire on Redis's clock", func() bool {
		n, err := p.Client().Exists(ctx, held.Key("k")).Result()
		require.NoError(t, err)
		return n == 0
	})
	r, err = held.AllowN(ctx, "k", 5)
	require.NoError(t, err)
	require.True(t, r.Allowed, "at the same instant, the state expired on Redis's clock")
}

// TestStateTTLMiniredis checks the exact PX on miniredis, whose TTLs do not
// run down by themselves, and that FastForward past it removes the key.
func TestStateTTLMiniredis(t *testing.T) {
	m, p := mini(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "ttl", Config{Rate: 7, Period: 90 * time.Second, Now: clk.Now})
	r, err := l.AllowN(context.Background(), "k", 3)
	require.NoError(t, err)
	require.Equal(t, us(38_571_429), r.ResetAfter)
	require.Equal(t, 38_572*time.Millisecond, m.TTL(l.Key("k")))
	require.Equal(t, fmt.Sprintf("%d 4.7", t0.UnixMicro()+38_571_428), mustGet(t, m, l.Key("k")), "µs and 4/7 µs")
	m.FastForward(38_572 * time.Millisecond)
	require.False(t, m.Exists(l.Key("k")))
}

func mustGet(t *testing.T, m interface{ Get(string) (string, error) }, key string) string {
	t.Helper()
	v, err := m.Get(key)
	require.NoError(t, err)
	return v
}

// TestRedisTime: without Config.Now the script uses Redis's TIME; with
// miniredis's clock set, the state is exactly that instant plus the TAT.
func TestRedisTime(t *testing.T) {
	m, p := mini(t)
	m.SetTime(t0)
	l := newLimiter(t, p, "time", Config{Rate: 10})
	r, err := l.AllowN(context.Background(), "k", 4)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, 6, r.Remaining)
	require.Equal(t, fmt.Sprint(t0.Add(400*time.Millisecond).UnixMicro()), mustGet(t, m, l.Key("k")))
}

func TestKeysShareOneHashTag(t *testing.T) {
	_, p := mini(t)
	l := newLimiter(t, p, "api", Config{Rate: 1})
	require.Equal(t, "{rl:api}:user:{42}", l.Key("user:{42}"))
}

func TestNewGCRAUnits(t *testing.T) {
	cases := []struct {
		rate   int
		period time.Duration
		burst  int
		want   gcra
	}{
		{10, time.Second, 10, gcra{scale: 1, step: 100_000, burst: 10, limit: 1_000_000, exact: true}},
		{7, 90 * time.Second, 7, gcra{scale: 7, step: 90_000_000, burst: 7, limit: 630_000_000, exact: true}},
		{1_000_000, 24 * time.Hour, 1_000_000, gcra{scale: 1, step: 86_400, burst: 1_000_000, limit: 86_400_000_000, exact: true}},
		// Exact units would span 1e6 x 86,400,000,000: rounded up to whole µs.
		{1_000_003, 24 * time.Hour, 1_000_000, gcra{scale: 1, step: 86_400, burst: 1_000_000, limit: 86_400_000_000}},
	}
	for _, c := range cases {
		g, err := newGCRA(c.rate, c.period, c.burst)
		require.NoError(t, err)
		require.Equal(t, c.want, g, "%d per %s burst %d", c.rate, c.period, c.burst)
	}
	_, err := newGCRA(1, 1000*24*time.Hour, 100_000)
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "Config.Burst (100000) times the emission interval")
}

// TestDenialWritesNothing_Server: a denial runs GET only (nothing to
// replicate, no TTL extended), an admission GET and SET; counted by the
// server, which counts commands run inside scripts too.
func TestDenialWritesNothing_Server(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	clk := testutil.NewClock()
	l := newLimiter(t, p, "writes", Config{Rate: 2, Now: clk.Now, NoDeniedCache: true})
	keepState(t, l) // still one SET per admission, without PX
	ctx := context.Background()
	calls := func() map[string]int64 {
		st, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return st
	}
	before := calls()
	for range 2 {
		r, err := l.Allow(ctx, "k")
		require.NoError(t, err)
		require.True(t, r.Allowed)
	}
	for range 5 {
		r, err := l.Allow(ctx, "k")
		require.NoError(t, err)
		require.False(t, r.Allowed)
	}
	after := calls()
	require.Equal(t, int64(7), after["get"]-before["get"])
	require.Equal(t, int64(2), after["set"]-before["set"])
	require.Zero(t, after["time"]-before["time"], "Config.Now replaces TIME")

	// Without Config.Now the script reads Redis's clock, once per call.
	redisClock := newLimiter(t, p, "writes-time", Config{Rate: 2})
	for range 3 {
		_, err := redisClock.Allow(ctx, "k")
		require.NoError(t, err)
	}
	require.Equal(t, int64(3), calls()["time"]-after["time"])
}
