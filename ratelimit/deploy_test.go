package ratelimit

import (
	"context"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// TestPreviousVersionReadsState: during a rolling deploy of this version,
// processes still running the previous one (which stored "<µs> <rem>" and
// parses exactly that) share the keys. They must read the state the new
// version writes as the instant it is, not as no state at all: a key whose
// burst was spent must stay denied for them. Only a call that lands exactly
// on the boundary may be denied by them where exact GCRA admits it.
func TestPreviousVersionReadsState(t *testing.T) { onBoth(t, testPreviousVersionReadsState) }

func testPreviousVersionReadsState(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	// 7 per 90 s: T is 12,857,142 6/7 µs, so the state has a fraction.
	l := newLimiter(t, p, "deploy", Config{Rate: 7, Period: 90 * time.Second, Burst: 3, Now: clk.Now, NoDeniedCache: true})
	keepState(t, l)
	previous := redis.NewScript(gcraScriptPrevious)
	old := func(n int) int64 { // the previous version's call: its reply
		t.Helper()
		v, err := previous.Run(context.Background(), p.Client(), []string{l.Key("k")},
			strconv.FormatInt(clk.Now().UnixMicro(), 10), l.scaleArg, l.stepArg, l.burstArg, n).Int64()
		require.NoError(t, err)
		return v
	}

	r, err := l.AllowN(context.Background(), "k", 2)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	clk.Advance(time.Microsecond)
	require.Equal(t, 3*l.g.step-l.g.scale, old(1), "the previous version, one µs later, admits the third event from the state written")
	r, err = l.AllowN(context.Background(), "k", 1)
	require.NoError(t, err)
	require.Equal(t, Result{RetryAfter: us(12_857_142), ResetAfter: us(38_571_428), Limit: 3, Source: SourceRedis}, r,
		"and this version reads what it wrote")

	// Exactly on the boundary, the previous version denies what exact GCRA
	// admits (it reads the fraction as a little more than it is).
	r, err = l.AllowN(context.Background(), "edge", 2)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	v, err := previous.Run(context.Background(), p.Client(), []string{l.Key("edge")},
		strconv.FormatInt(clk.Now().UnixMicro(), 10), l.scaleArg, l.stepArg, l.burstArg, 1).Int64()
	require.NoError(t, err)
	require.LessOrEqual(t, v, int64(0), "at the boundary: see doc.go")

	// A spent burst, written by this version: the previous one denies too.
	k := "spent"
	r, err = l.AllowN(context.Background(), k, 3)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	v, err = previous.Run(context.Background(), p.Client(), []string{l.Key(k)},
		strconv.FormatInt(clk.Now().UnixMicro(), 10), l.scaleArg, l.stepArg, l.burstArg, 1).Int64()
	require.NoError(t, err)
	require.LessOrEqual(t, v, int64(0), "the previous version admitted an event past a spent burst")
}

// TestPreviousVersionNeverAdmitsEarly: this version and the previous one
// (same limit) interleaved call by call over random instants, often the
// exact µs at which the answer changes, against the exact rational model:
// this version agrees with the model on every call, and the previous one
// never admits what the model denies (it may deny at the boundary).
func TestPreviousVersionNeverAdmitsEarly(t *testing.T) {
	onBoth(t, testPreviousVersionNeverAdmitsEarly)
}

func testPreviousVersionNeverAdmitsEarly(t *testing.T, b backend) {
	p := b.newPool(t)
	previous := redis.NewScript(gcraScriptPrevious)
	for i, cfg := range []Config{
		{Rate: 7, Period: 90 * time.Second, Burst: 5},
		{Rate: 13, Period: 2 * time.Second, Burst: 6},
		{Rate: 999_983, Period: time.Hour, Burst: 1000},
	} {
		clk := testutil.NewClock()
		cfg.Now = clk.Now
		cfg.NoDeniedCache = true
		l := newLimiter(t, p, "mixed-"+strconv.Itoa(i), cfg)
		keepState(t, l)
		lim := ratLimitOf(cfg)
		m := &ratGCRA{tats: map[string]*big.Rat{}}
		rng := rand.New(rand.NewPCG(17, uint64(i)))
		oldAdmitted, boundary := 0, 0
		for j := range 600 {
			n := 1 + rng.IntN(cfg.Burst)
			now := clk.Now().UnixMicro()
			if tat := m.tats["k"]; tat != nil && rng.IntN(2) == 0 {
				// The first µs at which n events fit, or the one before.
				edge := new(big.Rat).Sub(tat, new(big.Rat).Sub(lim.span, new(big.Rat).Mul(lim.t, big.NewRat(int64(n), 1))))
				now = max(now, ratCeil(edge)-int64(rng.IntN(2)))
			} else {
				now += rng.Int64N(2 * ratCeil(lim.t))
			}
			clk.Set(time.UnixMicro(now))
			before := m.tats["k"]
			want := m.allow(lim, "k", now, n)
			if rng.IntN(2) == 0 {
				got, err := l.AllowN(context.Background(), "k", n)
				require.NoError(t, err)
				require.Equal(t, want, got, "call %d: this version", j)
				continue
			}
			v, err := previous.Run(context.Background(), p.Client(), []string{l.Key("k")},
				strconv.FormatInt(now, 10), l.scaleArg, l.stepArg, l.burstArg, n).Int64()
			require.NoError(t, err)
			if v > 0 {
				oldAdmitted++
				require.True(t, want.Allowed, "call %d: the previous version admitted what exact GCRA denies", j)
			} else if want.Allowed {
				boundary++
				// Denied on the boundary only: a µs earlier the model denies too.
				probe := &ratGCRA{tats: map[string]*big.Rat{"k": before}}
				require.False(t, probe.allow(lim, "k", now-1, n).Allowed, "call %d: denied off the boundary", j)
				m.tats["k"] = before
			}
		}
		t.Logf("%v: the previous version admitted %d, denied %d on the boundary", cfg.Rate, oldAdmitted, boundary)
		require.Positive(t, oldAdmitted)
	}
}

// gcraScriptPrevious is gcraScript as the version before the stored
// denominator had it (commit 4070c50), verbatim.
const gcraScriptPrevious = `
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local scale = tonumber(ARGV[2])
local step = tonumber(ARGV[3])
local d = 0
local v = redis.call('GET', KEYS[1])
if v then
  local us, rem = v, 0
  local sp = string.find(v, ' ', 1, true)
  if sp then
    us, rem = string.sub(v, 1, sp - 1), tonumber(string.sub(v, sp + 1))
  end
  us = tonumber(us)
  if us and rem and us >= now then
    if us - now > (4503599627370496 - math.fmod(4503599627370496, scale)) / scale then
      d = 2 * 4503599627370496
    else
      d = (us - now) * scale + rem
    end
  end
end
local nd = d + tonumber(ARGV[5]) * step
if nd > tonumber(ARGV[4]) * step then
  return -d
end
local rem = math.fmod(nd, scale)
local us = (nd - rem) / scale
local px = us
if rem > 0 then px = px + 1 end
local ms = math.fmod(px, 1000)
px = (px - ms) / 1000
if ms > 0 then px = px + 1 end
if rem > 0 then
  redis.call('SET', KEYS[1], string.format('%d %d', now + us, rem), 'PX', px)
else
  redis.call('SET', KEYS[1], string.format('%d', now + us), 'PX', px)
end
return nd
`
