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
// The reading and writing of one window are gcraScript's own functions
// (gcraLua), so the rational model test covers both with one text.
const windowsScript = gcraLua + `
local now = gcra_now(ARGV[1])
local n = tonumber(ARGV[2])
local reply = {1}
local st = {}
for i = 1, #KEYS do
  local scale = tonumber(ARGV[3 * i])
  local step = tonumber(ARGV[3 * i + 1])
  local d, us, num, den = gcra_read(redis.call('GET', KEYS[i]), now, scale)
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
  gcra_write(KEYS[i], now, st[i][1], st[i][2], st[i][3], n * tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i]))
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
