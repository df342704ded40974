package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/pool"
)

// Source says what decided a Result.
type Source uint8

const (
	// SourceRedis: the script ran in Redis.
	SourceRedis Source = iota + 1
	// SourceDeniedCache: the key was known to be denied; Redis was not asked.
	SourceDeniedCache
	// SourceFallback: Redis was unavailable or failed, and Config.OnRedisError
	// answered.
	SourceFallback
)

func (s Source) String() string {
	switch s {
	case SourceRedis:
		return "redis"
	case SourceDeniedCache:
		return "denied-cache"
	case SourceFallback:
		return "fallback"
	}
	return "none"
}

// Result is the answer to a call. The zero value is a denial from no source.
type Result struct {
	// Allowed reports whether the events were admitted (and counted).
	Allowed bool
	// Remaining is how many more events would be admitted right now: after
	// this call's if it was allowed, instead of them if not.
	Remaining int
	// RetryAfter is how long until the same call could be admitted; zero when
	// Allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the key's bucket is full again (Limit
	// events available).
	ResetAfter time.Duration
	// Limit is the burst: the most events admitted at once.
	Limit int
	// Source is what decided.
	Source Source
	// Window is the position, in the limits of an AllowLimits call, of the
	// window that decided (see AllowLimits); 0 for a single limit.
	Window int
	// Err is, for SourceFallback, why Redis was not used: pool.ErrUnavailable
	// while Redis is marked down, or the error of the failed call.
	Err error
}

// Limiter limits events per key with GCRA in Redis, shared by every process
// that uses the same name on the same Redis.
//
// Build it with New; the zero value is not usable. It is safe for concurrent
// use. It starts no goroutine and holds nothing that needs closing: its
// connections are the pool's, which its owner closes after the Limiter's
// last use.
type Limiter struct {
	p      *pool.Pool
	name   string
	prefix string // "{rl:<name>}:"
	cfg    Config
	g      gcra
	own    windows // g as the one window of Allow, AllowN and Wait
	script *redis.Script
	// multi is the script of AllowLimits calls with several windows.
	multi *redis.Script
	// The script's constant arguments, formatted once.
	scaleArg, stepArg, burstArg string

	denied *expiring[deniedState] // nil with Config.NoDeniedCache
	local  *expiring[localState]  // nil unless FailLocal

	base   time.Time // the monotonic clock's origin when Config.Now is nil
	baseUS int64

	lastLog atomic.Int64 // unix µs of the last logged Redis error
	stats   counters
}

// New returns a Limiter named name on p. The name is the hash tag of every
// key it uses ({rl:<name>}:<key>), so limiters with different names never
// share state, and the same name shares it across processes; it must be
// non-empty, at most 100 bytes, without '{', '}', spaces or control
// characters. New checks the name and the Config (errors wrap
// ErrInvalidConfig and name the field) and does not touch Redis.
func New(p *pool.Pool, name string, cfg Config) (*Limiter, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	if err := check.Name("name", name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	g, err := newGCRA(cfg.Rate, cfg.Period, cfg.Burst)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	l := &Limiter{
		p:        p,
		name:     name,
		prefix:   "{rl:" + name + "}:",
		cfg:      cfg,
		g:        g,
		script:   redis.NewScript(gcraScript),
		multi:    redis.NewScript(windowsScript),
		scaleArg: strconv.FormatInt(g.scale, 10),
		stepArg:  strconv.FormatInt(g.step, 10),
		burstArg: strconv.FormatInt(g.burst, 10),
		base:     now,
		baseUS:   now.UnixMicro(),
	}
	l.own.n, l.own.g[0] = 1, g
	if !cfg.NoDeniedCache {
		l.denied = newExpiring[deniedState](cfg.DeniedKeys)
	}
	if cfg.OnRedisError == FailLocal {
		l.local = newExpiring[localState](cfg.LocalKeys)
	}
	if !g.exact {
		cfg.Logger.Warn("ratelimit: emission interval rounded up to whole microseconds; the limit is not exact",
			"limiter", name, "rate", cfg.Rate, "period", cfg.Period, "burst", cfg.Burst, "interval", g.interval())
	}
	return l, nil
}

// Name returns the limiter's name.
func (l *Limiter) Name() string { return l.name }

// Key returns the Redis key that holds key's state.
func (l *Limiter) Key(key string) string { return l.prefix + key }

// Interval returns the emission interval, Period/Rate, rounded up to whole
// µs: the time one event takes to replenish.
func (l *Limiter) Interval() time.Duration { return l.g.interval() }

// Allow reports whether one event for key may happen now, and counts it if
// so. It is AllowN(ctx, key, 1).
func (l *Limiter) Allow(ctx context.Context, key string) (Result, error) {
	return l.AllowN(ctx, key, 1)
}

// AllowN reports whether n events for key may happen now, and counts them
// if so; either all n are admitted or none.
//
// A key known to be denied is answered from the denied cache without Redis.
// While the pool reports Redis down, Config.OnRedisError answers at once
// (Result.Source is SourceFallback), and so it does when the call to Redis
// fails: AllowN returns an error only for bad arguments (ErrInvalidArgument:
// an empty key, n < 1, n above the burst), when the pool has been closed,
// and when ctx ends or its deadline passes before Redis answers: that error
// matches ctx's (context.DeadlineExceeded for a deadline) however the call
// failed, and nothing is counted as a Redis error.
func (l *Limiter) AllowN(ctx context.Context, key string, n int) (Result, error) {
	if err := l.check(key, n); err != nil {
		return Result{}, err
	}
	return l.decide(ctx, key, int64(n), &l.own)
}

// decide answers n events for key under the windows ws: AllowN's and
// AllowLimits's common path, the arguments checked.
func (l *Limiter) decide(ctx context.Context, key string, n int64, ws *windows) (Result, error) {
	now := l.now()
	if l.denied != nil {
		if r, ok := l.lookupDenied(key, n, now, ws); ok {
			l.stats.deniedCache.Add(1)
			return l.count(r), nil
		}
	}
	// While Redis is down, AdmitContext answers in well under a
	// microsecond; when it claims the probe, ctx carries it, so this call's
	// command is the probe and no other caller's can spend it.
	ctx, err := l.p.AdmitContext(ctx)
	if err != nil {
		return l.fallback(key, n, now, ws, err), nil
	}
	rep := l.ask(ctx, key, n, now, ws)
	if rep.err != nil {
		return l.failed(ctx, key, n, now, ws, rep)
	}
	l.stats.redisCalls.Add(1)
	r := ws.result(&rep.d, n, SourceRedis)
	if !r.Allowed && l.denied != nil {
		l.storeDenied(key, now, ws, &rep.d)
	}
	return l.count(r), nil
}

// reply is the outcome of one run of the script.
type reply struct {
	d   [MaxWindows]int64 // each window's TAT-now before the call, in units
	err error
	// timedOut: err came from running out Config.Timeout, not the caller's
	// deadline.
	timedOut bool
}

// ask runs the script for n events for key at now, bounded by
// Config.Timeout through the pool, so that running it out counts toward
// marking Redis down there, where the caller's deadline does not. A
// caller's deadline that comes first bounds the call alone.
func (l *Limiter) ask(ctx context.Context, key string, n, now int64, ws *windows) reply {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= l.cfg.Timeout {
		return l.runAny(ctx, key, n, now, ws)
	}
	rctx, cancel := pool.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	rep := l.runAny(rctx, key, n, now, ws)
	rep.timedOut = rep.err != nil && ended(rctx)
	return rep
}

// runAny runs gcraScript for one window, windowsScript for several.
func (l *Limiter) runAny(ctx context.Context, key string, n, now int64, ws *windows) (rep reply) {
	if ws.n > 1 {
		rep.d, rep.err = l.runWindows(ctx, key, n, now, ws)
		return rep
	}
	g := ws.g[0]
	v, err := l.run(ctx, key, n, now, g)
	// gcraScript's reply is TAT-now after an admission, its negation before
	// a denial: TAT-now before the call either way.
	rep.d[0], rep.err = -v, err
	if v > 0 {
		rep.d[0] = v - n*g.step
	}
	return rep
}

// failed answers a call whose script failed with rep.err. The caller's own
// context ending, and a closed pool, are errors; anything else is a Redis
// failure, answered by Config.OnRedisError.
func (l *Limiter) failed(ctx context.Context, key string, n, now int64, ws *windows, rep reply) (Result, error) {
	err := rep.err
	if cerr := callerEnded(ctx, err); cerr != nil {
		return Result{}, fmt.Errorf("ratelimit: %s %q: %w", l.name, key, cerr)
	}
	if errors.Is(err, redis.ErrClosed) {
		// The service closed the pool before its last caller: an error, not
		// a policy's answer that would hide it.
		return Result{}, fmt.Errorf("ratelimit: %s %q: %w", l.name, key, err)
	}
	if rep.timedOut {
		err = fmt.Errorf("ratelimit: %s: no answer within Config.Timeout %s: %w", l.name, l.cfg.Timeout, err)
	}
	// ErrUnavailable here: the pool was marked down after AdmitContext let
	// the call through, and refused the command; nothing was sent.
	if !errors.Is(err, pool.ErrUnavailable) {
		l.redisError(err)
	}
	return l.fallback(key, n, now, ws, err), nil
}

// callerEnded returns the error for a call to Redis that failed with err
// once ctx had ended, nil if ctx is still live. Its deadline counts as
// ended as soon as it has passed: the socket's deadline is ctx's, and the
// I/O timeout can come back a moment before ctx reports its error, which
// must not make the answer a policy's one time in a few. The error matches
// ctx's (context.DeadlineExceeded) whatever err was.
func callerEnded(ctx context.Context, err error) error {
	if !ended(ctx) {
		return nil
	}
	cerr := ctx.Err()
	if cerr == nil {
		cerr = context.DeadlineExceeded
	}
	if errors.Is(err, cerr) {
		return err
	}
	return fmt.Errorf("%w (%w)", cerr, err)
}

// ended reports whether ctx has ended or its deadline has passed.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func (l *Limiter) check(key string, n int) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: %s: empty key", ErrInvalidArgument, l.name)
	case n < 1:
		return fmt.Errorf("%w: %s: n must be at least 1, got %d", ErrInvalidArgument, l.name, n)
	case n > l.cfg.Burst:
		return fmt.Errorf("%w: %s: n=%d exceeds the burst of %d and could never be admitted",
			ErrInvalidArgument, l.name, n, l.cfg.Burst)
	}
	return nil
}

// now returns the current instant in µs: Config.Now's, or the monotonic
// clock's since New counted from the wall clock then.
func (l *Limiter) now() int64 {
	if l.cfg.Now != nil {
		return l.cfg.Now().UnixMicro()
	}
	return l.baseUS + time.Since(l.base).Microseconds()
}

// fallback answers with Config.OnRedisError; cause is why Redis was not used.
func (l *Limiter) fallback(key string, n, now int64, ws *windows, cause error) Result {
	l.stats.fallback.Add(1)
	var r Result
	var d [MaxWindows]int64
	switch l.cfg.OnRedisError {
	case FailOpen:
		r = ws.result(&d, n, SourceFallback) // as if every bucket were full
	case FailClosed:
		for i := range ws.n {
			d[i] = ws.g[i].limit // as if every bucket were empty
		}
		r = ws.result(&d, n, SourceFallback)
	default:
		r = l.allowLocal(key, n, now, ws)
	}
	r.Err = cause
	return l.count(r)
}

func (l *Limiter) count(r Result) Result {
	l.stats.bySource.count(r)
	if r.Allowed {
		l.stats.allowed.Add(1)
	} else {
		l.stats.denied.Add(1)
	}
	return r
}

// redisError counts a failed call and logs it, at most once a second (while
// Redis is down the pool's breaker stops the calls and the pool logs the
// outage once).
func (l *Limiter) redisError(err error) {
	l.stats.redisErrors.Add(1)
	now := time.Now().UnixMicro()
	last := l.lastLog.Load()
	if now-last < int64(time.Second/time.Microsecond) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		// Redis answered with an error: not an outage but a bug or a key
		// holding something else.
		l.cfg.Logger.Error("ratelimit: script failed; answering with the Redis-error policy",
			"limiter", l.name, "policy", l.cfg.OnRedisError, "err", err)
		return
	}
	l.cfg.Logger.Warn("ratelimit: redis call failed; answering with the Redis-error policy",
		"limiter", l.name, "policy", l.cfg.OnRedisError, "err", err)
}

// Stats counts a Limiter's decisions since New.
type Stats struct {
	Allowed uint64 `json:"allowed"`
	Denied  uint64 `json:"denied"` // all denials, those below included
	// DeniedCache counts denials answered by the denied cache, without Redis.
	DeniedCache uint64 `json:"denied_cache"`
	// Fallback counts decisions made by Config.OnRedisError.
	Fallback uint64 `json:"fallback"`
	// RedisCalls counts scripts that ran; RedisErrors calls that failed
	// (calls skipped while Redis was marked down are counted in Fallback
	// only).
	RedisCalls  uint64 `json:"redis_calls"`
	RedisErrors uint64 `json:"redis_errors"`
	// DeniedKeys is the denied cache's size now (at most Config.DeniedKeys),
	// DeniedEvictions the live entries it dropped to make room.
	DeniedKeys      int    `json:"denied_keys"`
	DeniedEvictions uint64 `json:"denied_evictions"`
	// LocalKeys is the number of FailLocal buckets now (at most
	// Config.LocalKeys), LocalEvictions the live ones dropped to make room.
	LocalKeys      int    `json:"local_keys"`
	LocalEvictions uint64 `json:"local_evictions"`
	// Allowed and Denied by the Source that decided (sources.go): Redis's
	// script, or Config.OnRedisError (Fallback is the sum of the latter
	// two). The denied cache only denies: DeniedCache.
	RedisAllowed    uint64 `json:"redis_allowed"`
	RedisDenied     uint64 `json:"redis_denied"`
	FallbackAllowed uint64 `json:"fallback_allowed"`
	FallbackDenied  uint64 `json:"fallback_denied"`
}

type counters struct {
	allowed, denied, deniedCache, fallback, redisCalls, redisErrors atomic.Uint64
	bySource                                                        bySource
}

// Stats returns a snapshot of the counters. It takes each cache shard's lock
// briefly, which is cheap enough for a metrics scrape.
func (l *Limiter) Stats() Stats {
	s := Stats{
		Allowed:     l.stats.allowed.Load(),
		Denied:      l.stats.denied.Load(),
		DeniedCache: l.stats.deniedCache.Load(),
		Fallback:    l.stats.fallback.Load(),
		RedisCalls:  l.stats.redisCalls.Load(),
		RedisErrors: l.stats.redisErrors.Load(),
	}
	l.stats.bySource.fill(&s)
	if l.denied != nil {
		s.DeniedKeys, s.DeniedEvictions = l.denied.len(), l.denied.evictions()
	}
	if l.local != nil {
		s.LocalKeys, s.LocalEvictions = l.local.len(), l.local.evictions()
	}
	return s
}
