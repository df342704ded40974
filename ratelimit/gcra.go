package ratelimit

import (
	"fmt"
	igcra "github.com/bounded-go/bounded/internal/gcra"
	"math"
	"time"
)

// maxUnits bounds the span of one limit in units (see gcra): the script adds
// at most two such spans, and 2^53 is the largest integer a Lua number (a
// float64) holds exactly.
const maxUnits = igcra.MaxUnits

// gcra is a limit in the integer arithmetic the algorithm runs in, the same
// in the Lua script and in Go.
//
// Time is counted in units of 1/scale µs, where scale = Rate/g and g =
// gcd(Rate, Period in µs). In those units the emission interval Period/Rate
// is the integer step = Period_µs/g exactly, so 7 events per 90 s are 7 steps
// of 12,857,142 6/7 µs that add up to 90 s, not 89.999994 s: sequences never
// drift and Remaining never under-reports (redis_rate's float state reports 8
// where 9 remain). Absolute instants stay in whole µs (TAT is kept as µs plus
// a remainder in units; in Redis, where other limits may share it, as µs
// plus a fraction with its denominator: see gcraScript); only TAT-now, at
// most a burst's span, is ever multiplied by scale, which keeps every value
// below 2^53.
type gcra struct {
	scale int64 // units per µs
	step  int64 // the emission interval, in units
	burst int64
	limit int64 // burst*step: how far TAT may run ahead of now after an admission
	// exact is false when Burst*step did not fit in maxUnits and the emission
	// interval was rounded up to whole µs instead (scale 1): the rate is then
	// lower than asked by less than 1 µs per event.
	exact bool
}

// newGCRA derives the units of a limit of rate events per period with a
// burst. The arguments have been validated as positive, period in whole µs.
func newGCRA(rate int, period time.Duration, burst int) (gcra, error) {
	l, ok := gcraUnits(rate, period, burst)
	if !ok {
		return gcra{}, fmt.Errorf("%w: Config.Burst (%d) times the emission interval (%s) exceeds %s",
			ErrInvalidConfig, burst, usDuration(l.step), usDuration(maxUnits))
	}
	return l, nil
}

// gcraUnits is newGCRA without the error: ok is false when even whole µs do
// not fit, and l.step is then the interval in whole µs, for the message.
func gcraUnits(rate int, period time.Duration, burst int) (l gcra, ok bool) {
	scale, step, exact, ok := igcra.Units(int64(rate), period.Microseconds(), int64(burst))
	l = gcra{scale: scale, step: step, burst: int64(burst), exact: exact}
	if ok {
		l.limit = l.step * l.burst
	}
	return l, ok
}

// interval is the emission interval rounded up to whole µs.
func (l gcra) interval() time.Duration { return usDuration(ceilDiv(l.step, l.scale)) }

// excess returns TAT-now in units (how far the key's bucket is from full),
// zero when TAT has passed. TAT is tatUS µs plus tatRem units.
func (l gcra) excess(tatUS, tatRem, nowUS int64) int64 {
	if tatUS < nowUS {
		return 0 // TAT < tatUS+1 <= now
	}
	if tatUS-nowUS > maxUnits/l.scale {
		return 2 * maxUnits // far ahead (a clock that went back): denied, without overflow
	}
	return (tatUS-nowUS)*l.scale + tatRem
}

// decide admits n events when TAT-now is d: allowed if the new TAT-now, nd,
// stays within the burst's span.
func (l gcra) decide(d, n int64) (allowed bool, nd int64) {
	nd = d + n*l.step
	return nd <= l.limit, nd
}

// tat returns the TAT nd units after now as whole µs and a remainder.
func (l gcra) tat(nowUS, nd int64) (us, rem int64) {
	return nowUS + nd/l.scale, nd % l.scale
}

// admission describes an admission that left TAT-now at x units.
func (l gcra) admission(x int64, src Source) Result {
	return l.state(x, Result{Allowed: true, Source: src})
}

// denial describes a denial of n events while TAT-now is x units.
func (l gcra) denial(x, n int64, src Source) Result {
	r := l.state(x, Result{Source: src})
	r.RetryAfter = usDuration(ceilDiv(x+n*l.step-l.limit, l.scale))
	return r
}

// state fills in what r says about a bucket whose TAT-now is x units.
func (l gcra) state(x int64, r Result) Result {
	r.Limit = int(l.burst)
	r.Remaining = int(max(0, floorDiv(l.limit-x, l.step)))
	r.ResetAfter = usDuration(ceilDiv(x, l.scale))
	return r
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a-1)/b + 1
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// usDuration converts µs to a Duration, saturating instead of overflowing.
func usDuration(us int64) time.Duration {
	if us > math.MaxInt64/int64(time.Microsecond) {
		return math.MaxInt64
	}
	return time.Duration(us) * time.Microsecond
}
