package ratelimit

import (
	"context"
	"strconv"

	igcra "github.com/bounded-go/bounded/internal/gcra"
)

// gcraLua is the arithmetic both scripts share (internal/gcra, which the
// queue package's rate limits include too): gcra_now, gcra_read (a state's
// TAT as us + num/den µs and TAT-now d in units, rounded up) and gcra_write
// (the TAT k units later, SET with PX). See gcraScript for the state's
// format and the arithmetic's invariants.
const gcraLua = igcra.Lua

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
