package ratelimit

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// ratGCRA is GCRA in exact rational arithmetic (math/big.Rat), written from
// the definition and sharing nothing with gcra.go's integer units: each
// key's TAT is an exact instant in µs, the emission interval T is
// Period/Rate µs exactly, and a call for n events at now is admitted when
// max(TAT, now) + n*T - now <= Burst*T. Limits may change from call to call
// under the same state, as they do in a rolling deploy.
type ratGCRA struct{ tats map[string]*big.Rat }

// ratLimit is a limit in the model's terms.
type ratLimit struct {
	t, span *big.Rat // T and Burst*T, in µs
	burst   int
}

func ratLimitOf(cfg Config) ratLimit {
	t := big.NewRat(cfg.Period.Microseconds(), int64(cfg.Rate))
	return ratLimit{t: t, span: new(big.Rat).Mul(t, big.NewRat(int64(cfg.Burst), 1)), burst: cfg.Burst}
}

func ratCeil(x *big.Rat) int64 {
	q, m := new(big.Int).DivMod(x.Num(), x.Denom(), new(big.Int)) // Euclidean: m >= 0
	if m.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	return q.Int64()
}

func ratFloor(x *big.Rat) int64 {
	q, _ := new(big.Int).DivMod(x.Num(), x.Denom(), new(big.Int))
	return q.Int64()
}

func ratSub(a, b *big.Rat) *big.Rat { return new(big.Rat).Sub(a, b) }

// allow answers n events for key at now (µs) under lim, and moves the TAT
// if admitted. Remaining is how many whole T fit in what is left of the
// span; durations are rounded up to whole µs, as Result promises.
func (m *ratGCRA) allow(lim ratLimit, key string, now int64, n int) Result {
	nowR := new(big.Rat).SetInt64(now)
	x := new(big.Rat) // TAT - now, at least 0
	if tat, ok := m.tats[key]; ok && tat.Cmp(nowR) > 0 {
		x = ratSub(tat, nowR)
	}
	nx := new(big.Rat).Add(x, new(big.Rat).Mul(lim.t, big.NewRat(int64(n), 1)))
	r := Result{Limit: lim.burst, Source: SourceRedis}
	if nx.Cmp(lim.span) <= 0 {
		m.tats[key] = new(big.Rat).Add(nowR, nx)
		r.Allowed = true
		r.Remaining = int(ratFloor(new(big.Rat).Quo(ratSub(lim.span, nx), lim.t)))
		r.ResetAfter = us(ratCeil(nx))
		return r
	}
	r.Remaining = int(max(0, ratFloor(new(big.Rat).Quo(ratSub(lim.span, x), lim.t))))
	r.RetryAfter = us(ratCeil(ratSub(nx, lim.span)))
	r.ResetAfter = us(ratCeil(x))
	return r
}

// modelConfigs are the limits the model tests switch between under one
// name: emission intervals of whole µs (scale 1) and of thirds, sevenths,
// thirteenths and 999,983ths of a µs, bursts from 1 to 1000.
var modelConfigs = []Config{
	{Rate: 7, Period: 90 * time.Second, Burst: 5},
	{Rate: 3, Period: time.Second, Burst: 3},
	{Rate: 10, Period: time.Second, Burst: 4},
	{Rate: 13, Period: 2 * time.Second, Burst: 6},
	{Rate: 6, Period: 7 * time.Second, Burst: 2},
	{Rate: 999_983, Period: time.Hour, Burst: 1000},
	{Rate: 1, Period: 3 * time.Second, Burst: 1},
}

// TestScriptMatchesRationalModel replays random AllowN sequences against
// the script and the exact rational model, which must agree on every field
// of every Result. Each sequence runs limiters of several limits under one
// name, interleaved call by call (a rolling deploy, where old and new
// processes share the state) or one after the other (a deploy that is
// done), over a few keys. Instants are random, and often the exact µs at
// which the model's answer changes, or the one before, so that a TAT off by
// a fraction of a µs shows.
func TestScriptMatchesRationalModel(t *testing.T) { onBoth(t, testScriptMatchesRationalModel) }

func testScriptMatchesRationalModel(t *testing.T, b backend) {
	p := b.newPool(t)
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(14, seed))
			// A few of the limits, under one name.
			var ls []*Limiter
			var lims []ratLimit
			clk := testutil.NewClock()
			for _, i := range rng.Perm(len(modelConfigs))[:2+int(seed)%4] {
				cfg := modelConfigs[i]
				cfg.Now = clk.Now
				cfg.NoDeniedCache = true
				l := newLimiter(t, p, fmt.Sprint("rational-", seed), cfg)
				keepState(t, l)
				ls = append(ls, l)
				lims = append(lims, ratLimitOf(cfg))
			}
			m := &ratGCRA{tats: map[string]*big.Rat{}}
			interleaved := seed%2 == 0
			cur := 0
			for j := range 600 {
				if interleaved || rng.IntN(50) == 0 {
					cur = rng.IntN(len(ls))
				}
				l, lim := ls[cur], lims[cur]
				key := fmt.Sprint("k", rng.IntN(3))
				n := 1 + rng.IntN(lim.burst)
				now := clk.Now().UnixMicro()
				switch rng.IntN(4) {
				case 0: // same instant
				case 1:
					now += rng.Int64N(2*ratCeil(lim.t) + 1)
				default:
					// The first µs the model admits this call at, or the one
					// before.
					if m.tats[key] == nil {
						break
					}
					probe := &ratGCRA{tats: map[string]*big.Rat{key: m.tats[key]}}
					if r := probe.allow(lim, key, now, n); !r.Allowed {
						now += r.RetryAfter.Microseconds() - rng.Int64N(2)
					}
				}
				clk.Set(time.UnixMicro(now))
				got, err := l.AllowN(context.Background(), key, n)
				require.NoError(t, err)
				want := m.allow(lim, key, now, n)
				require.Equal(t, want, got, "call %d: limit %d (%d per %s, burst %d), %s n=%d at %d µs",
					j, cur, l.cfg.Rate, l.cfg.Period, l.cfg.Burst, key, n, now)
			}
		})
	}
}

// TestLocalMatchesRationalModel checks the Go arithmetic FailLocal runs
// (gcra.go, the same as the script's) against the rational model, for each
// limit on its own: FailLocal's buckets belong to one Limiter.
func TestLocalMatchesRationalModel(t *testing.T) {
	_, p := mini(t)
	for i, cfg := range modelConfigs {
		l := newLimiter(t, p, fmt.Sprint("local-", i), cfg)
		lim := ratLimitOf(cfg)
		m := &ratGCRA{tats: map[string]*big.Rat{}}
		rng := rand.New(rand.NewPCG(15, uint64(i)))
		now := t0.UnixMicro()
		for j := range 2000 {
			key := fmt.Sprint("k", rng.IntN(3))
			n := 1 + rng.IntN(cfg.Burst)
			switch rng.IntN(3) {
			case 0:
			case 1:
				now += rng.Int64N(2*ratCeil(lim.t) + 1)
			default:
				if tat := m.tats[key]; tat != nil {
					probe := &ratGCRA{tats: map[string]*big.Rat{key: tat}}
					if r := probe.allow(lim, key, now, n); !r.Allowed {
						now += r.RetryAfter.Microseconds() - rng.Int64N(2)
					}
				}
			}
			got := l.allowLocal(key, int64(n), now, &l.own)
			got.Source = SourceRedis
			require.Equal(t, m.allow(lim, key, now, n), got, "limit %d call %d: %s n=%d at %d µs", i, j, key, n, now)
		}
	}
}

// TestNewLimitReadsTheSameInstant: a limit deployed under the same name
// reads the TAT the old one left to the exact fraction of a µs. 7 per 90s
// leaves TAT at t0 + 12,857,142 6/7 µs; one per 12,857,143 µs then admits
// its one event exactly when that much is left before the TAT has passed,
// not 5 µs later (the 6/7 read as 6 whole µs).
func TestNewLimitReadsTheSameInstant(t *testing.T) { onBoth(t, testNewLimitReadsTheSameInstant) }

func testNewLimitReadsTheSameInstant(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	old := newLimiter(t, p, "redeploy", Config{Rate: 7, Period: 90 * time.Second, Now: clk.Now, NoDeniedCache: true})
	keepState(t, old)
	r, err := old.Allow(context.Background(), "k")
	require.NoError(t, err)
	require.True(t, r.Allowed)

	cur := newLimiter(t, p, "redeploy", Config{Rate: 1, Period: us(12_857_143), Burst: 1, Now: clk.Now, NoDeniedCache: true})
	keepState(t, cur)
	for _, s := range []step{
		{at: 0, n: 1, retry: us(12_857_143), reset: us(12_857_143)},
		{at: us(12_857_142), n: 1, retry: us(1), reset: us(1)},
		{at: us(12_857_143), n: 1, allowed: true, reset: us(12_857_143)},
	} {
		clk.Set(t0.Add(s.at))
		r, err := cur.Allow(context.Background(), "k")
		require.NoError(t, err)
		require.Equal(t, Result{Allowed: s.allowed, RetryAfter: s.retry, ResetAfter: s.reset, Limit: 1, Source: SourceRedis}, r, "at +%s", s.at)
	}
}

// TestStateWithoutDenominator: a state written before the denominator was
// stored ("<µs> <rem>") is read in the reader's units, as it was written
// by a limiter of the same limit.
func TestStateWithoutDenominator(t *testing.T) {
	m, p := mini(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "legacy", Config{Rate: 7, Period: 90 * time.Second, Now: clk.Now, NoDeniedCache: true})
	require.NoError(t, m.Set(l.Key("k"), fmt.Sprintf("%d 6", t0.UnixMicro()+12_857_142))) // TAT t0 + T
	r, err := l.AllowN(context.Background(), "k", 7)
	require.NoError(t, err)
	require.Equal(t, Result{Remaining: 6, RetryAfter: us(12_857_143), ResetAfter: us(12_857_143), Limit: 7, Source: SourceRedis}, r)
	r, err = l.AllowN(context.Background(), "k", 6)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, fmt.Sprint(t0.UnixMicro()+90_000_000), mustGet(t, m, l.Key("k")), "7 T, a whole number of µs")
}

// TestUnitsWithoutCommonMultiple: limits whose units have no common
// multiple within maxUnits (1,000,000,007 and 998,244,353 per hour, both
// prime) cannot keep the fraction exactly across a change; it is rounded up
// to the reader's units, so the state can only say "later" than the exact
// TAT, by less than a µs: the limiters never admit what the exact model
// denies, and deny what it admits only within 1 µs of its boundary.
func TestUnitsWithoutCommonMultiple(t *testing.T) { onBoth(t, testUnitsWithoutCommonMultiple) }

func testUnitsWithoutCommonMultiple(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	cfgs := []Config{
		{Rate: 1_000_000_007, Period: time.Hour, Burst: 1000},
		{Rate: 998_244_353, Period: time.Hour, Burst: 1000},
	}
	var ls []*Limiter
	var lims []ratLimit
	for _, cfg := range cfgs {
		cfg.Now = clk.Now
		cfg.NoDeniedCache = true
		l := newLimiter(t, p, "coprime", cfg)
		keepState(t, l)
		require.True(t, l.g.exact)
		ls = append(ls, l)
		lims = append(lims, ratLimitOf(cfg))
	}
	m := &ratGCRA{tats: map[string]*big.Rat{}}
	rng := rand.New(rand.NewPCG(16, 0))
	admitted, strict := 0, 0
	for j := range 2000 {
		i := rng.IntN(2)
		n := 1 + rng.IntN(300)
		now := clk.Now().UnixMicro() + rng.Int64N(400)
		clk.Set(time.UnixMicro(now))
		got, err := ls[i].AllowN(context.Background(), "k", n)
		require.NoError(t, err)
		if got.Allowed {
			// The writer's fraction is in its own units (reduced): the
			// common multiple was not kept.
			state, err := p.Client().Get(context.Background(), ls[i].Key("k")).Result()
			require.NoError(t, err)
			if _, frac, ok := strings.Cut(state, " "); ok {
				_, d, ok := strings.Cut(frac, ".")
				require.True(t, ok, "call %d: state %q without its denominator", j, state)
				den, err := strconv.ParseInt(d, 10, 64)
				require.NoError(t, err)
				require.Equal(t, ls[i].g.scale, den, "call %d: state %q not in the writer's units", j, state)
			}
		}
		before := m.tats["k"]
		want := m.allow(lims[i], "k", now, n)
		if got.Allowed {
			admitted++
			require.True(t, want.Allowed, "call %d: admitted what exact GCRA denies", j)
		}
		if want.Allowed && !got.Allowed {
			strict++
			// Denied within a µs of the exact boundary: 1 µs later the
			// model, from the same TAT, still admits.
			probe := &ratGCRA{tats: map[string]*big.Rat{"k": before}}
			require.True(t, probe.allow(lims[i], "k", now-1, n).Allowed || before == nil, "call %d: denied more than 1 µs early", j)
			// Keep the model on the limiters' side of the boundary.
			if before == nil {
				delete(m.tats, "k")
			} else {
				m.tats["k"] = before
			}
		}
	}
	t.Logf("%d admitted, %d denied by the rounding", admitted, strict)
	require.Positive(t, admitted)
}
