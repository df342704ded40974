package ratelimit

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// gcraScript is the whole of what a Limiter runs in Redis: one GET, and one
// SET with PX when the call is admitted (a denial writes nothing, so it is
// not replicated). The arithmetic is gcra's (see gcra.go), in integers that
// stay below 2^53, which a Lua number holds exactly; math.fmod and
// string.format('%d') keep them exact where / and tostring would not.
//
// KEYS[1] is the key's state, its TAT (theoretical arrival time) as "<µs>"
// or "<µs> <remainder in units>". It expires when TAT passes, which is when
// the bucket is full again and the state says nothing: no cleanup anywhere.
// ARGV: now in µs (empty for Redis TIME), scale, step, burst, n.
//
// The reply is TAT-now in units after the call: positive when admitted,
// zero or negated when denied. Go derives Remaining, RetryAfter and
// ResetAfter from it, so the script stays small.
const gcraScript = `
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
    -- gcra.excess's cap: a TAT further ahead than maxUnits/scale µs (a
    -- clock that went back) counts as 2*maxUnits, a denial, instead of a
    -- product past 2^53 (inexact) or 2^63 (no integer reply can hold it).
    -- maxUnits is 2^52, as in gcra.go; the floor of maxUnits/scale is
    -- computed exactly, as Go's integer division.
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

// run asks Redis about n events for key at nowUS (0: Redis TIME) and returns
// the script's reply.
func (l *Limiter) run(ctx context.Context, c redis.Scripter, key string, n int64, nowUS int64) (int64, error) {
	now := ""
	if l.cfg.Now != nil {
		now = strconv.FormatInt(nowUS, 10)
	}
	return l.script.Run(ctx, c, []string{l.prefix + key}, now, l.scaleArg, l.stepArg, l.burstArg, n).Int64()
}
