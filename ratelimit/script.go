package ratelimit

import (
	"context"
	"strconv"
)

// gcraLua is the arithmetic both scripts share: gcra_now, gcra_read (a
// state's TAT as us + num/den µs and TAT-now d in units, rounded up) and
// gcra_write (the TAT k units later, SET with PX). See gcraScript for the
// state's format and the arithmetic's invariants.
const gcraLua = `
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

// gcraScript is the whole of what a Limiter runs in Redis: one GET, and one
// SET with PX when the call is admitted (a denial writes nothing, so it is
// not replicated). The arithmetic is gcra's (see gcra.go), in integers that
// stay below 2^53, which a Lua number holds exactly; math.fmod and
// string.format('%d') keep them exact where / and tostring would not.
//
// KEYS[1] is the key's state, its TAT (theoretical arrival time) as "<µs>"
// or "<µs> <num>.<den>": µs plus the fraction num/den of a µs (the dot
// separates two integers; it is not a decimal point). The fraction is
// stored with its denominator so that a limit whose units differ (another
// Rate or Period under the same name: a deploy, or old and new processes
// side by side during one) reads the same instant. den is the writer's
// scale when its units hold the fraction, else the least common multiple
// of the units of the limits that wrote it, in lowest terms, at most
// maxUnits; past that the fraction is rounded up to this limit's units
// (never earlier than the exact instant). "<µs> <rem>", written by the
// previous version, is read in this limit's units. That version reads
// "<µs> <num>.<den>" as rem = num plus less than one unit, which is
// exactly its own state when it has the writer's limit: during a rolling
// deploy to this version it decides as GCRA does, but for denying a call
// that lands exactly on the boundary (it never admits one early, where a
// format it could not parse would read as an empty bucket).
// "<µs> <num> <den>" (written briefly before) is read too.
// The state expires when TAT passes, which is when the bucket is full again
// and the state says nothing: no cleanup anywhere.
// ARGV: now in µs (empty for Redis TIME), scale, step, burst, n.
//
// The reply is TAT-now in units after the call, rounded up to a whole unit:
// positive when admitted, zero or negated when denied. Rounding up decides
// exactly, because the limit is a whole number of units. Go derives
// Remaining, RetryAfter and ResetAfter from it, so the script stays small.
const gcraScript = gcraLua + `
local now = gcra_now(ARGV[1])
local scale = tonumber(ARGV[2])
local step = tonumber(ARGV[3])
local k = tonumber(ARGV[5]) * step
local d, us, num, den = gcra_read(redis.call('GET', KEYS[1]), now, scale)
local nd = d + k
if d >= 2 * max or nd > tonumber(ARGV[4]) * step then
  return -d
end
gcra_write(KEYS[1], now, us, num, den, k, scale)
return nd
`

// run asks Redis about n events for key and returns the script's reply. The
// instant nowUS is passed only with Config.Now; otherwise the script reads
// Redis's TIME.
func (l *Limiter) run(ctx context.Context, key string, n, nowUS int64, g gcra) (int64, error) {
	now := ""
	if l.cfg.Now != nil {
		now = strconv.FormatInt(nowUS, 10)
	}
	if g != l.g { // a limit given with the call
		return l.script.Run(ctx, l.p.Client(), []string{l.prefix + key}, now, g.scale, g.step, g.burst, n).Int64()
	}
	return l.script.Run(ctx, l.p.Client(), []string{l.prefix + key}, now, l.scaleArg, l.stepArg, l.burstArg, n).Int64()
}
