package ratelimit

import (
	"context"
	"fmt"
	"strconv"
)

// windowsScript is gcraScript for several windows at once, all or none:
// KEYS[i] is window i's state, in gcraScript's format, read the same way
// (see there); ARGV: now in µs (empty for Redis TIME), n, then scale, step
// and burst of each window in KEYS's order. Every window is read first; only
// when each admits n events are they all written, each with its own PX. A
// denial writes nothing.
//
// The reply is {admitted, d1, d2, ...}: 1 or 0, then each window's TAT-now
// in units before the call, rounded up (2*maxUnits for a TAT too far ahead,
// as gcra.excess caps it). Go derives the Result from them (windows.result).
//
// The reading and writing of one window are gcraScript's, line for line, so
// that the rational model test covers both; keep them in step.
const windowsScript = `
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local n = tonumber(ARGV[2])
local max = 4503599627370496 -- maxUnits, 2^52, as in gcra.go
local function gcd(a, b)
  while b > 0 do
    local r = math.fmod(a, b)
    a = b
    b = r
  end
  return a
end
local reply = {1}
local st = {}
for i = 1, #KEYS do
  local scale = tonumber(ARGV[3 * i])
  local step = tonumber(ARGV[3 * i + 1])
  local us, num, den, d = now, 0, 1, 0
  local v = redis.call('GET', KEYS[i])
  if v then
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
      if tus - now > (max - math.fmod(max, scale)) / scale then
        d = 2 * max
      else
        local g = gcd(tden, scale)
        if tden / g > max / scale then
          tnum = math.min(scale, math.floor(tnum / tden * scale) + 3)
          tden, g = scale, scale
          if tnum == tden then tus, tnum = tus + 1, 0 end
        end
        local l = tden / g * scale
        local f, u = tnum * (l / tden), l / scale
        local r = math.fmod(f, u)
        d = (tus - now) * scale + (f - r) / u
        if r > 0 then d = d + 1 end
        us, num, den = tus, tnum, tden
      end
    end
  end
  reply[i + 1] = d
  st[i] = {us, num, den}
  if d + n * step > tonumber(ARGV[3 * i + 2]) * step then
    reply[1] = 0
  end
end
if reply[1] == 0 then
  return reply
end
for i = 1, #KEYS do
  local scale = tonumber(ARGV[3 * i])
  local k = n * tonumber(ARGV[3 * i + 1])
  local us, num, den = st[i][1], st[i][2], st[i][3]
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
    if math.fmod(scale, l) == 0 then
      num = num * (scale / l)
      l = scale
    end
  end
  local ms = math.fmod(px, 1000)
  px = (px - ms) / 1000
  if ms > 0 then px = px + 1 end
  if num > 0 then
    redis.call('SET', KEYS[i], string.format('%d %d.%d', us, num, l), 'PX', px)
  else
    redis.call('SET', KEYS[i], string.format('%d', us), 'PX', px)
  end
end
return reply
`

// runWindows asks Redis about n events for key under every window of ws
// (two or more) and returns each window's TAT-now before the call.
func (l *Limiter) runWindows(ctx context.Context, key string, n, nowUS int64, ws *windows) (d [MaxWindows]int64, err error) {
	keys := make([]string, ws.n)
	args := make([]any, 2, 2+3*ws.n)
	args[0] = ""
	if l.cfg.Now != nil {
		args[0] = strconv.FormatInt(nowUS, 10)
	}
	args[1] = n
	for i := range ws.n {
		keys[i] = l.windowKey(key, i)
		args = append(args, ws.g[i].scale, ws.g[i].step, ws.g[i].burst)
	}
	v, err := l.multi.Run(ctx, l.p.Client(), keys, args...).Int64Slice()
	if err != nil {
		return d, err
	}
	if len(v) != ws.n+1 {
		return d, fmt.Errorf("ratelimit: %s: the windows script answered %d values for %d windows", l.name, len(v), ws.n)
	}
	copy(d[:], v[1:])
	return d, nil
}
