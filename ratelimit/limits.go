package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// MaxWindows is the most limits one call of [Limiter.AllowLimits] checks at
// once.
const MaxWindows = 4

// Limit is a rate limit given with a call instead of in Config: Rate events
// per Period, in bursts of up to Burst. Its zero fields mean what Config's
// do: Period zero is one second, Burst zero is Rate. Rate must be positive
// and Period a whole number of µs. A Limit is a plain value; building one
// per call costs nothing.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// PerSecond is rate events per second, in bursts of up to rate.
func PerSecond(rate int) Limit { return Limit{Rate: rate, Period: time.Second} }

// PerMinute is rate events per minute, in bursts of up to rate.
func PerMinute(rate int) Limit { return Limit{Rate: rate, Period: time.Minute} }

// PerHour is rate events per hour, in bursts of up to rate.
func PerHour(rate int) Limit { return Limit{Rate: rate, Period: time.Hour} }

// PerDay is rate events per 24 hours, in bursts of up to rate.
func PerDay(rate int) Limit { return Limit{Rate: rate, Period: 24 * time.Hour} }

func (lim Limit) String() string {
	return fmt.Sprintf("%d per %s, burst %d", lim.Rate, lim.Period, lim.Burst)
}

// windows is the limits one call checks, in GCRA units: the Limiter's own
// (one window), or a call's. Window i keeps its state at windowKey(key, i).
type windows struct {
	n int
	g [MaxWindows]gcra
}

// AllowLimits reports whether n events for key may happen now under every
// one of limits, and counts them in each if so: all or none. It is AllowN
// with the limits given per call, for quotas that differ by caller (one
// Limiter serves every plan), and with several windows at once
// (PerSecond(10) and PerDay(1000)) decided in one script.
//
// Window i keeps its state under its position: the first limit shares the
// key's state with Allow and AllowN (Limiter.Key), the others have their
// own (the same hash tag, so one call touches one Cluster slot). A limit
// that changes between calls, under the same position, reads the state as
// the instant it is, exactly as a changed Config does (docs/ratelimit.md):
// a caller moving from one plan to another keeps what it has spent. So keep
// each window at its position: add windows at the end, and Reset a key
// whose windows were reordered (a day's state read as a second's would deny
// until that day's state has passed).
//
// The Result is the most restrictive window's: when denied, the window that
// would wait longest decides (Result.Window is its position) and RetryAfter
// is when every window admits the call; when allowed, the window with the
// fewest Remaining decides (ties: the longer ResetAfter, then the first).
// Remaining is the least of all the windows' either way, Limit and
// ResetAfter are the deciding window's.
//
// The denied cache and Config.OnRedisError work as for AllowN; FailLocal
// keeps every window of a key in one local bucket. The denied cache answers
// a key only with the limit Redis denied it under, at the same position:
// with several windows it gives the deciding window's RetryAfter, which may
// be shorter than Redis's (the cache then ends early, never late).
//
// Errors are AllowN's; an invalid limit, no limit, more than MaxWindows, or
// an n above any window's burst is ErrInvalidArgument, naming the limit and
// the field.
func (l *Limiter) AllowLimits(ctx context.Context, key string, n int, limits ...Limit) (Result, error) {
	var ws windows
	if err := l.checkLimits(&ws, key, n, limits); err != nil {
		return Result{}, err
	}
	return l.decide(ctx, key, int64(n), &ws)
}

// checkLimits validates a call's arguments and fills ws with its limits in
// GCRA units.
func (l *Limiter) checkLimits(ws *windows, key string, n int, limits []Limit) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: %s: empty key", ErrInvalidArgument, l.name)
	case n < 1:
		return fmt.Errorf("%w: %s: n must be at least 1, got %d", ErrInvalidArgument, l.name, n)
	case len(limits) == 0:
		return fmt.Errorf("%w: %s: no limit given", ErrInvalidArgument, l.name)
	case len(limits) > MaxWindows:
		return fmt.Errorf("%w: %s: %d limits, at most MaxWindows (%d) at once", ErrInvalidArgument, l.name, len(limits), MaxWindows)
	}
	ws.n = len(limits)
	for i, lim := range limits {
		g, err := lim.units(i)
		if err != nil {
			return fmt.Errorf("%w: %s: %w (%s)", ErrInvalidArgument, l.name, err, lim)
		}
		if int64(n) > g.burst {
			return fmt.Errorf("%w: %s: n=%d exceeds limits[%d].Burst of %d and could never be admitted",
				ErrInvalidArgument, l.name, n, i, g.burst)
		}
		ws.g[i] = g
	}
	return nil
}

// units validates lim, fills in its defaults and returns it in GCRA units.
// The error names the field as limits[i]. Nothing is formatted unless it
// fails: this runs on every call, the allocation-free ones (denied cache,
// Redis down) included.
func (lim Limit) units(i int) (gcra, error) {
	if lim.Rate <= 0 {
		return gcra{}, fmt.Errorf("limits[%d].Rate must be positive, got %d", i, lim.Rate)
	}
	switch {
	case lim.Period == 0:
		lim.Period = DefaultPeriod
	case lim.Period < 0:
		return gcra{}, fmt.Errorf("limits[%d].Period must not be negative, got %s", i, lim.Period)
	case lim.Period%time.Microsecond != 0:
		return gcra{}, fmt.Errorf("limits[%d].Period must be a whole number of microseconds, got %s", i, lim.Period)
	}
	switch {
	case lim.Burst == 0:
		lim.Burst = lim.Rate
	case lim.Burst < 0:
		return gcra{}, fmt.Errorf("limits[%d].Burst must not be negative, got %d", i, lim.Burst)
	}
	g, ok := gcraUnits(lim.Rate, lim.Period, lim.Burst)
	if !ok {
		return gcra{}, fmt.Errorf("limits[%d].Burst (%d) times the emission interval (%s) exceeds %s",
			i, lim.Burst, usDuration(g.step), usDuration(maxUnits))
	}
	return g, nil
}

// windowKey returns the Redis key of window i of key: Key(key) for the
// first, a key with the same hash tag for each other position.
func (l *Limiter) windowKey(key string, i int) string {
	if i == 0 {
		return l.prefix + key
	}
	// "{rl:<name>}#<i>:<key>": the character after the hash tag differs from
	// the first window's ':', so no key of one position is a key of another.
	return l.prefix[:len(l.prefix)-1] + "#" + string(rune('0'+i)) + ":" + key
}

// result turns each window's TAT-now before the call, d[i] units, into the
// call's Result: admitted when every window admits n events, and then the
// window with the fewest Remaining decides; denied otherwise, and then the
// one that would wait longest. Remaining is the least of all.
func (ws *windows) result(d *[MaxWindows]int64, n int64, src Source) Result {
	if ws.n == 1 {
		// Allow, AllowN and a single per-call limit: what the loops below
		// decide for one window, without them, so that the calls that
		// answer in process memory cost what they did before windows.
		g := ws.g[0]
		if ok, nd := g.decide(d[0], n); ok {
			return g.admission(nd, src)
		}
		return g.denial(d[0], n, src)
	}
	allowed := true
	for i := range ws.n {
		if ok, _ := ws.g[i].decide(d[i], n); !ok {
			allowed = false
		}
	}
	var best Result
	dec := -1
	for i := range ws.n {
		g := ws.g[i]
		var r Result
		switch ok, nd := g.decide(d[i], n); {
		case allowed:
			r = g.admission(nd, src)
		case ok: // admits, but another window does not: nothing is counted
			r = g.state(d[i], Result{Source: src})
		default:
			r = g.denial(d[i], n, src)
		}
		switch {
		case dec < 0:
		case allowed && (r.Remaining < best.Remaining || r.Remaining == best.Remaining && r.ResetAfter > best.ResetAfter):
		case !allowed && r.RetryAfter > best.RetryAfter:
		default:
			best.Remaining = min(best.Remaining, r.Remaining)
			continue
		}
		if dec >= 0 {
			r.Remaining = min(best.Remaining, r.Remaining)
		}
		best, dec = r, i
	}
	best.Window = dec
	return best
}
