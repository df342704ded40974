// Package gcra is the Lua of the generic cell rate algorithm that
// ratelimit.Limiter runs in Redis, shared so that another package (the
// queue's rate limits, issue 17) can include it in a script of its own,
// since queue may not import ratelimit; and Units, the integer units the
// Lua counts in.
//
// Lua is a chunk of local functions (and the local max), no statement with
// an effect at its top level: prepend it to a script's body. Time is
// counted in units of 1/scale µs, the emission interval is step units, and
// a key's state is its TAT (see ratelimit's gcraScript for the format):
//
//	gcra_now(arg)                               -> now in µs: tonumber(arg), or Redis TIME
//	gcra_read(v, now, scale)                    -> d (TAT-now in units, rounded up), us, num, den
//	gcra_write(key, now, us, num, den, k, scale) -> SET key to the TAT k units later, with PX
//
// An admission of n events is allowed when d + n*step <= burst*step.
package gcra

// MaxUnits bounds the span of one limit in units: the script adds at most
// two such spans, and 2^53 is the largest integer a Lua number (a float64)
// holds exactly.
const MaxUnits = 1 << 52

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Units derives the units of a limit of rate events per periodUS µs with a
// burst, all positive: scale units per µs and the emission interval step
// in units, exact (periodUS/rate) when burst*step fits in MaxUnits, else in
// whole µs rounded up (scale 1, exact false: the rate is then lower than
// asked by less than 1 µs per event). ok is false when even whole µs do
// not fit; step is then the interval in whole µs, for a message.
func Units(rate, periodUS, burst int64) (scale, step int64, exact, ok bool) {
	g := gcd(rate, periodUS)
	scale, step = rate/g, periodUS/g
	if step <= MaxUnits/burst && scale <= MaxUnits {
		return scale, step, true, true
	}
	// Exact units would not fit (nor would a scale past 2^52, a rate of
	// more than 2^52 per µs of its period, in a Lua number): fall back to
	// whole µs, rounded up so the limit is never exceeded.
	step = (periodUS-1)/rate + 1
	return 1, step, false, burst <= MaxUnits && step <= MaxUnits/burst
}

// Lua is the library: see the package doc. Numbers stay below 2^53, which a
// Lua number holds exactly; math.fmod and string.format('%d') keep them
// exact where / and tostring would not.
const Lua = `
local max = 4503599627370496 -- maxUnits, 2^52, as in gcra.go
-- (One assignment per statement where a value depends on another being
-- assigned: miniredis's Lua assigns a, b = b, f(a, b) left to right.)
local function gcd(a, b)
  while b > 0 do
    local r = math.fmod(a, b)
    a = b
    b = r
  end
  return a
end
-- gcra_now is ARGV's now in µs, or Redis TIME when it is empty.
local function gcra_now(arg)
  local now = tonumber(arg)
  if not now then
    local t = redis.call('TIME')
    now = t[1] * 1000000 + t[2]
  end
  return now
end
-- gcra_read returns d, us, num, den for the state v (false: none): TAT is
-- us + num/den µs, 0 <= num < den; d is TAT-now in units of 1/scale µs,
-- rounded up, or 2*max (a denial) for a TAT further ahead than maxUnits
-- allows (then us, num, den are now, 0, 1).
local function gcra_read(v, now, scale)
  local us, num, den, d = now, 0, 1, 0
  if not v then return d, us, num, den end
  local a, b, c = v, '0', nil
  local sp = string.find(v, ' ', 1, true)
  if sp then
    a, b = string.sub(v, 1, sp - 1), string.sub(v, sp + 1)
    sp = string.find(b, ' ', 1, true)
    if not sp then sp = string.find(b, '.', 1, true) end
    if sp then
      c = string.sub(b, sp + 1)
      b = string.sub(b, 1, sp - 1)
    end
  end
  local tus, tnum, tden = tonumber(a), tonumber(b), scale
  if c then tden = tonumber(c) end
  if tus and tnum and tden and tden >= 1 and tnum >= 0 and tnum < tden and tus >= now then
    -- gcra.excess's cap: a TAT further ahead than maxUnits/scale µs (a
    -- clock that went back) counts as 2*maxUnits, a denial, instead of a
    -- product past 2^53 (inexact) or 2^63 (no integer reply can hold it).
    -- The floor of maxUnits/scale is computed exactly, as Go's division.
    if tus - now > (max - math.fmod(max, scale)) / scale then
      return 2 * max, us, num, den
    end
    local g = gcd(tden, scale)
    if tden / g > max / scale then
      -- No common unit within maxUnits: round the fraction up to ours.
      -- The float product is within 2 of the exact one; 3 more is safe.
      tnum = math.min(scale, math.floor(tnum / tden * scale) + 3)
      tden, g = scale, scale
      if tnum == tden then tus, tnum = tus + 1, 0 end
    end
    -- num/den in units of 1/scale µs is (num*l/den)/(l/scale), l the
    -- least common multiple; every product stays below l <= maxUnits.
    local l = tden / g * scale
    local f, u = tnum * (l / tden), l / scale
    local r = math.fmod(f, u)
    d = (tus - now) * scale + (f - r) / u
    if r > 0 then d = d + 1 end
    us, num, den = tus, tnum, tden
  end
  return d, us, num, den
end
-- gcra_write stores the TAT k units of 1/scale µs after us + num/den,
-- exactly, expiring when it passes.
local function gcra_write(key, now, us, num, den, k, scale)
  local kr = math.fmod(k, scale)
  us = us + (k - kr) / scale
  local g = gcd(den, scale)
  local l = den / g * scale
  num = num * (l / den) + kr * (l / scale)
  if num >= l then num, us = num - l, us + 1 end
  local px = us - now
  if num > 0 then
    px = px + 1
    g = gcd(num, l)
    num, l = num / g, l / g
    -- In this limit's units when they hold it, for the previous version.
    if math.fmod(scale, l) == 0 then
      num = num * (scale / l)
      l = scale
    end
  end
  local ms = math.fmod(px, 1000)
  px = (px - ms) / 1000
  if ms > 0 then px = px + 1 end
  if num > 0 then
    redis.call('SET', key, string.format('%d %d.%d', us, num, l), 'PX', px)
  else
    redis.call('SET', key, string.format('%d', us), 'PX', px)
  end
end
`
