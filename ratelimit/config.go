package ratelimit

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bounded-go/bounded/internal/check"
)

// Defaults filled in by New for zero Config fields.
const (
	DefaultPeriod     = time.Second
	DefaultDeniedKeys = 10_000
	DefaultLocalKeys  = 10_000
	DefaultTimeout    = 250 * time.Millisecond
	// MinTimeout is the least Config.Timeout New accepts: a bound that a
	// healthy Redis misses now and then would mark it down for every
	// component of the pool.
	MinTimeout = time.Millisecond
)

var (
	// ErrInvalidConfig is wrapped by the errors New returns for a name or a
	// Config that cannot work; the message names the field.
	ErrInvalidConfig = errors.New("ratelimit: invalid config")
	// ErrInvalidArgument is wrapped by the errors a call returns for an empty
	// key or an n below 1 or above the burst. Such a call never reaches Redis
	// and can never succeed, so it is refused rather than denied.
	ErrInvalidArgument = errors.New("ratelimit: invalid argument")
)

// Policy says what a Limiter answers when it cannot ask Redis: while the
// pool reports Redis down, and when a call to Redis fails.
type Policy int

const (
	// FailLocal keeps limiting with a limiter local to this process: the
	// same rate and burst, per key, for at most Config.LocalKeys keys. With N
	// processes a key gets up to N times its limit while Redis is away,
	// instead of unlimited (FailOpen) or nothing (FailClosed). It starts
	// with full buckets and is not carried back to Redis. The zero Policy.
	FailLocal Policy = iota
	// FailOpen admits every call, reporting a full bucket. For limits that
	// protect a resource less precious than the service's availability.
	FailOpen
	// FailClosed denies every call, reporting an empty bucket (RetryAfter is
	// the time n events take to replenish). For limits that guard against
	// abuse or cost (logins, SMS, paid APIs) where letting calls through is
	// worse than refusing them.
	FailClosed
)

func (p Policy) String() string {
	switch p {
	case FailLocal:
		return "fail-local"
	case FailOpen:
		return "fail-open"
	case FailClosed:
		return "fail-closed"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Config configures a Limiter: Rate events per Period, with bursts of up to
// Burst. The zero value is not usable (Rate must be set); New fills in the
// defaults documented on the other fields.
type Config struct {
	// Rate is how many events a key may have per Period, sustained. It must
	// be positive.
	Rate int
	// Period is the period of Rate, any whole number of microseconds (7 per
	// 90s is exact: see docs/ratelimit.md on arithmetic). Zero means
	// DefaultPeriod, one second.
	Period time.Duration
	// Burst is how many events a key may have at once, after being idle long
	// enough (Burst*Period/Rate); it is the Limit of every Result. Zero means
	// Rate.
	Burst int

	// OnRedisError is what to answer while Redis is unavailable or a call to
	// it fails. The zero value is FailLocal.
	OnRedisError Policy
	// Timeout bounds each call to Redis, waiting for a connection
	// included. A call that runs it out is answered by OnRedisError, like
	// any failed call, and counts toward marking Redis down in the pool
	// (pool.WithTimeout): a Redis too slow for it soon makes calls fail fast
	// instead of each waiting Timeout. The caller's context deadline, when
	// it comes first, ends the call with an error instead, and says nothing
	// about Redis. Zero means DefaultTimeout, 250ms (the request lane's
	// default MaxWait); it must be at least MinTimeout.
	Timeout time.Duration
	// LocalKeys bounds the keys FailLocal tracks while Redis is away; past
	// it, the key whose bucket is fullest is forgotten first. Zero means
	// DefaultLocalKeys (about 160 bytes each plus the key, every window of
	// an AllowLimits call in one).
	LocalKeys int

	// DeniedKeys bounds the local cache of keys known to be denied, which
	// answers them without Redis until their RetryAfter passes; past it, the
	// entry closest to expiry is dropped first. Zero means DefaultDeniedKeys
	// (about 140 bytes each plus the key).
	DeniedKeys int
	// NoDeniedCache turns the denied cache off: every call runs the script.
	NoDeniedCache bool

	// Now, if set, is the clock of every decision: its instant is passed to
	// the script instead of Redis's TIME, and the local caches use it. It is
	// for tests with fixed instants and for callers who trust their clocks
	// more than Redis's. Nil means Redis TIME in the script, one clock for
	// every process, and the monotonic clock for local caches.
	//
	// The state's expiry still runs on Redis's clock: an admission writes
	// the key with PX set to its ResetAfter. With a clock that keeps pace
	// with real time that changes nothing. With a clock a test holds still
	// or moves by hand, decisions are exact as long as each key is used
	// again within the ResetAfter of its last admission in real time;
	// after that Redis has dropped the state and the next call finds a full
	// bucket. miniredis's TTLs run down only when the test moves them
	// (FastForward), so there fixed instants are always exact; on a real
	// server, use limits whose ResetAfter outlasts the test's pace.
	Now func() time.Time
	// Logger receives Redis errors that made the policy answer (at most one
	// record per second). Nil discards.
	Logger *slog.Logger
}

// withDefaults returns c with its zero fields filled in, or an error naming
// every field that cannot work. The limit in GCRA units is derived from the
// result by newGCRA.
func (c Config) withDefaults() (Config, error) {
	e := check.New(ErrInvalidConfig)
	if c.Rate <= 0 {
		e.Addf("Config.Rate must be positive, got %d", c.Rate)
	}
	check.Default(e, &c.Period, DefaultPeriod, "Config.Period")
	if c.Period > 0 && c.Period%time.Microsecond != 0 {
		e.Addf("Config.Period must be a whole number of microseconds, got %s", c.Period)
	}
	if c.Burst == 0 {
		c.Burst = c.Rate
	}
	if c.Burst < 1 && c.Rate > 0 {
		e.Addf("Config.Burst must be at least 1, got %d", c.Burst)
	}
	if c.OnRedisError < FailLocal || c.OnRedisError > FailClosed {
		e.Addf("Config.OnRedisError must be FailLocal, FailOpen or FailClosed, got %s", c.OnRedisError)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < MinTimeout {
		e.Addf("Config.Timeout must be at least %s, got %s", MinTimeout, c.Timeout)
	}
	check.Default(e, &c.DeniedKeys, DefaultDeniedKeys, "Config.DeniedKeys")
	check.Default(e, &c.LocalKeys, DefaultLocalKeys, "Config.LocalKeys")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, e.Err()
}
