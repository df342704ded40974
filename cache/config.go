package cache

import (
	"log/slog"
	"time"

	"github.com/bounded-go/bounded/internal/check"
)

// Defaults filled in by New for zero fields of Config.
const (
	DefaultTTL           = time.Hour
	DefaultMaxValueBytes = 1 << 20
	DefaultMaxEntries    = 10_000
	DefaultMaxBytes      = 64 << 20
	DefaultLocalTTL      = time.Minute
	DefaultLoadTimeout   = 10 * time.Second
	// MaxLoadTimeout bounds Config.LoadTimeout (and LockTTL, plus the
	// default margin): a load is not meant to take a day.
	MaxLoadTimeout  = 24 * time.Hour
	DefaultMaxLoads = 64
	// DefaultLockMargin is added to LoadTimeout for the default LockTTL: the
	// holder still has to write the value after its loader returns.
	DefaultLockMargin   = 2 * time.Second
	DefaultPingInterval = 30 * time.Second
	// MinPingInterval bounds Config.PingInterval from below: each interval
	// a Redis reply is late by makes the subscriber reconnect and flush the
	// local tier, so a shorter one would turn a slow Redis into a flush
	// storm (1µs flushed about 1,900 times a second).
	MinPingInterval = 100 * time.Millisecond
	// MaxKeyBytes is the longest key a cache accepts; longer ones fail with
	// ErrInvalid. Any key this long fits in one invalidation message (16
	// KiB): a longer one could only be invalidated by flushing the local
	// tier of every instance, which a caller whose keys come from user
	// input would do at will.
	MaxKeyBytes = 8 << 10
)

// Config configures a Cache. The zero value is useful: JSON (raw for []byte
// and string) in Redis, a local tier of 10,000 entries and 64 MiB whose
// entries live at most a minute, cross-instance stampede protection and
// invalidation on. New fills in the defaults documented on each field and
// validates the rest, naming the field that is wrong (each error matches
// ErrInvalidConfig).
type Config[V any] struct {
	// Codec encodes values for the Redis tier. Nil means raw bytes for
	// []byte and string and encoding/json for everything else.
	Codec Codec[V]
	// TTL is the Redis TTL of the values GetOrLoad writes (Set takes its
	// own). Default 1h. TTLs are sent in milliseconds, rounded up.
	TTL time.Duration
	// TTLJitter shortens every TTL written to Redis by a random fraction of
	// up to TTLJitter (0.1: between 90 % and 100 % of the TTL asked for), so
	// keys written together do not expire together. Must be in [0, 1).
	// Zero means exact TTLs.
	TTLJitter float64
	// NegativeTTL, when positive, makes GetOrLoad remember a loader's
	// ErrNotFound for that long (in Redis and locally), so a missing key
	// does not reach the loader on every call. Zero turns negative caching
	// off.
	NegativeTTL time.Duration
	// MaxValueBytes is the largest encoded value Set and GetOrLoad write;
	// larger ones fail with ErrValueTooLarge and nothing is written.
	// Default 1 MiB.
	MaxValueBytes int

	// NoLocal turns the local tier off: every Get goes to Redis.
	NoLocal bool
	// MaxEntries bounds the local tier's entries. Default 10,000. Memory
	// is taken as entries arrive, not for MaxEntries up front.
	MaxEntries int
	// MaxBytes bounds the local tier's bytes, counted as each entry's key
	// plus its encoded value. Default 64 MiB. Both bounds hold at all times;
	// a value too large for its shard of the tier (MaxBytes divided by the
	// shard count) is served from Redis only. The encoded size stands in for
	// the heap a V occupies; budget about 150 bytes of bookkeeping per entry
	// (MaxEntries) on top.
	MaxBytes int64
	// LocalTTL caps how long an entry stays in the local tier, whatever its
	// Redis TTL (an entry never outlives that either). It is the bound on
	// staleness should an invalidation message be lost. Default 1 minute.
	LocalTTL time.Duration

	// LoadTimeout bounds one call of a GetOrLoad loader. The loader runs on
	// its own context (the first caller's values, not its cancellation), so
	// a caller giving up cancels neither the load nor its Redis write.
	// Default 10s; at most MaxLoadTimeout.
	LoadTimeout time.Duration
	// MaxLoads bounds the GetOrLoad flights (one per key, shared by its
	// callers) that wait for another instance's load or call their loader
	// at once. A GetOrLoad that finds its key in neither tier while MaxLoads
	// are in progress fails at once with ErrTooManyLoads and calls no
	// loader; a value found in Redis is still served. Each flight is a
	// goroutine that can outlive its callers by up to LockTTL+LoadTimeout,
	// so this is the bound on how many there are, and on how many loaders
	// run at once. Default 64.
	MaxLoads int
	// NoLock turns off the cross-instance lock: without it every instance
	// that misses a key loads it once (one load per key per process);
	// with it one instance loads and the others wait for its value.
	NoLock bool
	// RefreshAfter, when positive, turns on refresh-ahead: a GetOrLoad
	// that finds a value older than RefreshAfter (in either tier) returns
	// it at once and hands a refresh of the key to the cache's background
	// refreshers, which load it once across every instance (through the
	// load lock and MaxLoads); a failed refresh leaves the old value to
	// serve until its TTL. It scales with each value's own TTL: a value
	// written with TTL t is due after t*RefreshAfter/TTL. It must be below
	// TTL, needs the lock (not NoLock) and Start, and every instance must
	// run a version that reads the refresh stamp (see docs/cache.md). Zero
	// turns it off.
	RefreshAfter time.Duration
	// MaxRefreshes bounds the refreshes that run at once: Start runs that
	// many lifecycle tasks, and a refresh due while they are all busy (or
	// hold their one queued request each) is skipped and tried again later.
	// Default 4 when RefreshAfter is set; at most MaxLoads.
	MaxRefreshes int
	// LockTTL is the expiry of the cross-instance load lock: if its holder
	// dies, another instance takes over after at most this long. Must be at
	// least LoadTimeout, and at least 1ms: it is sent as whole milliseconds
	// (PX), and Redis refuses PX 0. Default LoadTimeout + 2s.
	LockTTL time.Duration

	// NoInvalidation stops Set and Delete from telling other instances to
	// drop their local copies, and makes Start run no subscriber. Staleness
	// of the local tier is then bounded by LocalTTL alone.
	NoInvalidation bool
	// PingInterval is how long the invalidation subscriber waits for a
	// message before it pings Redis to check its connection; a ping left
	// unanswered for another interval makes it reconnect (and flush the
	// local tier). It also bounds the wait for Redis to confirm a
	// subscription. Default 30s; at least MinPingInterval.
	PingInterval time.Duration

	// MaxTagMembers bounds the keys one tag holds (see Tags). A tagged
	// write that would take a tag past it evicts the member that expires
	// first, deleting that key's value too, so InvalidateTag never misses
	// a live key. Default DefaultMaxTagMembers.
	MaxTagMembers int
	// TrackRawWrites makes the subscriber ask Redis for client-side-caching
	// invalidations of the cache's keys (CLIENT TRACKING BCAST PREFIX), on
	// its own connection, so that a value written by another program (a
	// plain SET) drops the local copies too. Where Redis refuses it
	// (miniredis, Redis before 6) the cache logs a notice and invalidates
	// through its Pub/Sub channel only; Stats.InvalidationMode says which
	// mode runs. See docs/cache.md.
	TrackRawWrites bool

	// Logger receives subscriber reconnects and failed Redis writes after a
	// load. Nil discards.
	Logger *slog.Logger
	// Now is the clock of the local tier's expiry. Nil means the real
	// clock, read through its monotonic part only (cheaper on a hit).
	Now func() time.Time
}

// withDefaults returns c with the documented defaults filled in, or an error
// wrapping ErrInvalidConfig for each field that is wrong.
func (c Config[V]) withDefaults() (Config[V], error) {
	e := check.New(ErrInvalidConfig)
	if c.Codec == nil {
		c.Codec = defaultCodec[V]()
	}
	check.Default(e, &c.TTL, DefaultTTL, "Config.TTL")
	check.Default(e, &c.NegativeTTL, 0, "Config.NegativeTTL") // zero: off
	// Written so that NaN fails too: it would make every TTL 1ms.
	if !(c.TTLJitter >= 0 && c.TTLJitter < 1) {
		e.Addf("Config.TTLJitter must be in [0, 1), got %g", c.TTLJitter)
	}
	check.Default(e, &c.MaxValueBytes, DefaultMaxValueBytes, "Config.MaxValueBytes")
	c.checkLocal(e)
	c.checkLoads(e)
	c.checkTags(e)
	c.checkRefresh(e)
	check.Default(e, &c.PingInterval, DefaultPingInterval, "Config.PingInterval")
	if c.PingInterval > 0 && c.PingInterval < MinPingInterval {
		e.Addf("Config.PingInterval must be at least %s (each late reply reconnects and flushes the local tier), got %s", MinPingInterval, c.PingInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, e.Err()
}

// checkLocal fills and checks the local tier's bounds, which NoLocal leaves
// zero.
func (c *Config[V]) checkLocal(e *check.Errors) {
	if c.NoLocal {
		check.Default(e, &c.LocalTTL, 0, "Config.LocalTTL")
		if c.MaxEntries != 0 || c.MaxBytes != 0 || c.LocalTTL != 0 {
			e.Addf("Config.NoLocal is set but Config.MaxEntries, MaxBytes or LocalTTL is too (%d, %d, %s)", c.MaxEntries, c.MaxBytes, c.LocalTTL)
		}
		return
	}
	check.Default(e, &c.MaxEntries, DefaultMaxEntries, "Config.MaxEntries")
	check.Default(e, &c.MaxBytes, DefaultMaxBytes, "Config.MaxBytes")
	check.Default(e, &c.LocalTTL, DefaultLocalTTL, "Config.LocalTTL")
}

// checkLoads fills and checks LoadTimeout, LockTTL and MaxLoads. A flight
// lives LockTTL+LoadTimeout: both are bounded so the sum cannot wrap.
func (c *Config[V]) checkLoads(e *check.Errors) {
	check.Default(e, &c.MaxLoads, DefaultMaxLoads, "Config.MaxLoads")
	check.Default(e, &c.LoadTimeout, DefaultLoadTimeout, "Config.LoadTimeout")
	var lockTTL time.Duration // left zero (and reported below) past MaxLoadTimeout
	if c.LoadTimeout <= MaxLoadTimeout {
		lockTTL = c.LoadTimeout + DefaultLockMargin
	}
	check.Default(e, &c.LockTTL, lockTTL, "Config.LockTTL")
	switch {
	case c.LoadTimeout > MaxLoadTimeout:
		e.Addf("Config.LoadTimeout must be at most %s, got %s", MaxLoadTimeout, c.LoadTimeout)
	case c.LockTTL > MaxLoadTimeout+DefaultLockMargin:
		e.Addf("Config.LockTTL must be at most %s, got %s", MaxLoadTimeout+DefaultLockMargin, c.LockTTL)
	case c.LockTTL >= 0 && c.LockTTL < time.Millisecond:
		// Sent as whole milliseconds: anything shorter is PX 0, which Redis
		// refuses, so every GetOrLoad would fail to take the lock.
		e.Addf("Config.LockTTL must be at least 1ms (the lock is set with PX, in whole milliseconds), got %s", c.LockTTL)
	case c.LockTTL >= 0 && c.LockTTL < c.LoadTimeout:
		e.Addf("Config.LockTTL (%s) must be at least Config.LoadTimeout (%s), or a slow load would let another instance load too", c.LockTTL, c.LoadTimeout)
	}
}

// DefaultMaxRefreshes is Config.MaxRefreshes when RefreshAfter is set.
const DefaultMaxRefreshes = 4

// checkRefresh fills and checks RefreshAfter and MaxRefreshes (after TTL,
// MaxLoads and NoLock are known).
func (c *Config[V]) checkRefresh(e *check.Errors) {
	check.Default(e, &c.RefreshAfter, 0, "Config.RefreshAfter") // zero: off
	if c.RefreshAfter <= 0 {
		if c.MaxRefreshes != 0 {
			e.Addf("Config.MaxRefreshes is %d but Config.RefreshAfter is not set", c.MaxRefreshes)
		}
		return
	}
	check.Default(e, &c.MaxRefreshes, min(DefaultMaxRefreshes, max(c.MaxLoads, 1)), "Config.MaxRefreshes")
	switch {
	case c.RefreshAfter >= c.TTL:
		e.Addf("Config.RefreshAfter (%s) must be below Config.TTL (%s): a value is refreshed after RefreshAfter and served until TTL", c.RefreshAfter, c.TTL)
	case c.NoLock:
		e.Addf("Config.RefreshAfter (%s) needs the cross-instance lock, which Config.NoLock turns off: every instance would refresh every key", c.RefreshAfter)
	case c.MaxRefreshes > c.MaxLoads && c.MaxLoads > 0:
		e.Addf("Config.MaxRefreshes (%d) must be at most Config.MaxLoads (%d): each refresh holds a load slot", c.MaxRefreshes, c.MaxLoads)
	}
}
