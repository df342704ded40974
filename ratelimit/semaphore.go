package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// Defaults and bounds of SemaphoreConfig.
const (
	DefaultLeaseTTL    = 10 * time.Second
	DefaultMaxWaiters  = 1000
	DefaultWaitRecheck = time.Second
	// MinLeaseTTL is the shortest SemaphoreConfig.LeaseTTL: leases are
	// renewed every third of it, and a renewal must fit in a third.
	MinLeaseTTL = 100 * time.Millisecond
	// MinWaitRecheck is the shortest SemaphoreConfig.WaitRecheck: shorter
	// would make a waiter poll.
	MinWaitRecheck = 10 * time.Millisecond
	// MaxSemaphoreLimit bounds SemaphoreConfig.Limit, and so each key's
	// sorted set in Redis.
	MaxSemaphoreLimit = 1_000_000
	// MaxSemaphoreKeyBytes bounds a key passed to Acquire: it becomes part
	// of Redis keys and of the wake-up messages.
	MaxSemaphoreKeyBytes = 512
	// maxAbandoned bounds the leases this process failed to release (or
	// may have been given by a call that failed) and removes at the next
	// renewal; past it they are left to expire, within LeaseTTL.
	maxAbandoned = 10_000
)

var (
	// ErrSemaphoreFull: TryAcquire found Limit holders (and so does an
	// Acquire turned away by ErrTooManyWaiters).
	ErrSemaphoreFull = errors.New("ratelimit: semaphore full")
	// ErrTooManyWaiters: an Acquire found the key full and
	// SemaphoreConfig.MaxWaiters callers of this Semaphore already waiting.
	ErrTooManyWaiters = errors.New("ratelimit: too many waiters")
	// ErrSemaphoreNotStarted: Acquire or TryAcquire before Start: nobody
	// would renew the lease.
	ErrSemaphoreNotStarted = errors.New("ratelimit: semaphore not started")
	// ErrSemaphoreClosed: the group the Semaphore was started on has
	// closed (waiters get it too).
	ErrSemaphoreClosed = errors.New("ratelimit: semaphore closed")
	// ErrSemaphoreUnavailable: Redis could not be asked (marked down by the
	// pool, the call failed or ran out SemaphoreConfig.Timeout). A
	// Semaphore fails closed: without Redis it admits nobody.
	ErrSemaphoreUnavailable = errors.New("ratelimit: semaphore: redis unavailable")
)

// SemaphoreConfig configures a Semaphore. Limit must be set; New fills in
// the defaults documented on the other fields.
type SemaphoreConfig struct {
	// Limit is the most holders one key may have at once, fleet-wide. It
	// must be between 1 and MaxSemaphoreLimit. Semaphores with one name
	// and different Limits each admit up to their own.
	Limit int
	// LeaseTTL is how long a holder's slot outlives the last renewal of its
	// lease: a holder whose process dies (or loses Redis) loses its slot
	// at most LeaseTTL after its last renewal. The Semaphore renews every
	// lease it holds every LeaseTTL/3. Zero means DefaultLeaseTTL, 10s; it
	// must be at least MinLeaseTTL.
	LeaseTTL time.Duration
	// MaxWaiters bounds the callers of this Semaphore waiting in Acquire at
	// once, over all keys; one more gets ErrTooManyWaiters. Zero means
	// DefaultMaxWaiters.
	MaxWaiters int
	// WaitRecheck bounds how long a lost wake-up (the subscriber
	// reconnecting, a release that found no waiting mark) keeps a waiter
	// waiting: a waiting key's oldest waiter tries again after at most
	// this. Zero means DefaultWaitRecheck, 1s; it must be at least
	// MinWaitRecheck.
	WaitRecheck time.Duration
	// Timeout bounds each call to Redis (an attempt, a release, a
	// renewal batch); running it out counts toward marking Redis down in
	// the pool. Zero means the smaller of DefaultTimeout and LeaseTTL/3; it
	// must be between MinTimeout and LeaseTTL/3 (a renewal must end before
	// the next is due).
	Timeout time.Duration
	// Now, if set, is the clock of leases: its instant is passed to the
	// scripts instead of Redis's TIME (tests with fixed instants). The
	// sets' own TTL (at least LeaseTTL after their last write) runs on Redis's
	// clock. Nil means Redis TIME, one clock for every process.
	Now func() time.Time
	// Logger receives Redis errors and lost leases (at most one record a
	// second). Nil discards.
	Logger *slog.Logger
}

func (c SemaphoreConfig) withDefaults() (SemaphoreConfig, error) {
	e := check.New(ErrInvalidConfig)
	if c.Limit < 1 || c.Limit > MaxSemaphoreLimit {
		e.Addf("SemaphoreConfig.Limit must be between 1 and %d, got %d", MaxSemaphoreLimit, c.Limit)
	}
	check.Default(e, &c.LeaseTTL, DefaultLeaseTTL, "SemaphoreConfig.LeaseTTL")
	if c.LeaseTTL > 0 && c.LeaseTTL < MinLeaseTTL {
		e.Addf("SemaphoreConfig.LeaseTTL must be at least %s, got %s", MinLeaseTTL, c.LeaseTTL)
	}
	check.Default(e, &c.MaxWaiters, DefaultMaxWaiters, "SemaphoreConfig.MaxWaiters")
	check.Default(e, &c.WaitRecheck, DefaultWaitRecheck, "SemaphoreConfig.WaitRecheck")
	if c.WaitRecheck > 0 && c.WaitRecheck < MinWaitRecheck {
		e.Addf("SemaphoreConfig.WaitRecheck must be at least %s, got %s", MinWaitRecheck, c.WaitRecheck)
	}
	timeout := DefaultTimeout
	if c.LeaseTTL >= MinLeaseTTL {
		timeout = min(timeout, c.LeaseTTL/3)
	}
	check.Default(e, &c.Timeout, timeout, "SemaphoreConfig.Timeout")
	switch {
	case c.Timeout > 0 && c.Timeout < MinTimeout:
		e.Addf("SemaphoreConfig.Timeout must be at least %s, got %s", MinTimeout, c.Timeout)
	case c.LeaseTTL >= MinLeaseTTL && c.Timeout > c.LeaseTTL/3:
		e.Addf("SemaphoreConfig.Timeout must be at most LeaseTTL/3 (%s), got %s: a renewal must end before the next is due", c.LeaseTTL/3, c.Timeout)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, e.Err()
}

// Semaphore limits how many holders each key has at once across a fleet:
// a concurrency limiter, where a Limiter limits a rate (Stripe's
// concurrent-request limiter is the model).
//
// Build it with NewSemaphore and start it with Start; the zero value is not
// usable. It is safe for concurrent use. Start hands its background work
// (one renewal timer, one waiter timer, one subscriber on a reserved
// connection) to a lifecycle group, whose closing stops it.
type Semaphore struct {
	p       *pool.Pool
	name    string
	cfg     SemaphoreConfig
	prefix  string // "{sem:<name>:"; a key's set is prefix+key+"}"
	channel string // where releases are published, payload the key
	// The scripts' constant arguments, formatted once.
	ttlArg, limitArg, markArg string
	tokens                    string // this Semaphore's token prefix
	seq                       atomic.Uint64

	startMu sync.Mutex
	w       atomic.Pointer[semWaiters] // set by Start

	mu         sync.Mutex
	held       map[string]map[string]struct{} // key -> tokens of live holders
	abandoned  map[string][]string            // key -> tokens to remove at the next renewal
	nAbandoned int

	stats   semCounters
	lastLog atomic.Int64
}

// NewSemaphore builds a Semaphore named name on p. It does not touch
// Redis. Semaphores with the same name on the same Redis share their slots.
// A name is non-empty, at most 100 bytes, without ':', '{', '}', spaces
// or control characters: the name ends at the first ':' of the key's Redis
// key, {sem:<name>:<key>}, so that different names never share a key.
// Errors wrap ErrInvalidConfig and name the field at fault.
func NewSemaphore(p *pool.Pool, name string, cfg SemaphoreConfig) (*Semaphore, error) {
	e := check.New(ErrInvalidConfig)
	if p == nil {
		e.Addf("nil pool")
	}
	e.Add(check.Name("semaphore name", name))
	if strings.Contains(name, ":") {
		// With one in it, "a" with key "b:c" and "a:b" with key "c" would
		// share a set.
		e.Addf("semaphore name %q must not contain ':' (it ends the name in the key's Redis key)", name)
	}
	cfg, err := cfg.withDefaults()
	if err = errors.Join(e.Err(), err); err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &Semaphore{
		p:         p,
		name:      name,
		cfg:       cfg,
		prefix:    "{sem:" + name + ":",
		channel:   "{sem:" + name + "}:released",
		ttlArg:    strconv.FormatInt(cfg.LeaseTTL.Microseconds(), 10),
		limitArg:  strconv.Itoa(cfg.Limit),
		markArg:   strconv.FormatInt(markTTL(cfg.WaitRecheck).Milliseconds(), 10),
		tokens:    hex.EncodeToString(id[:]) + ":",
		held:      map[string]map[string]struct{}{},
		abandoned: map[string][]string{},
	}, nil
}

// markTTL is the waiting mark's PX, three WaitRechecks: a waiting head
// sets it again at least every WaitRecheck. It saturates: three of a
// WaitRecheck of centuries overflow a Duration, and Redis refuses a
// negative PX.
func markTTL(recheck time.Duration) time.Duration {
	if recheck > math.MaxInt64/3 {
		return math.MaxInt64
	}
	return 3 * recheck
}

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.name }

// Key returns the Redis key of key's sorted set of leases.
func (s *Semaphore) Key(key string) string { return s.prefix + key + "}" }

func (s *Semaphore) markKey(key string) string { return s.prefix + key + "}:w" }

// Limit returns SemaphoreConfig.Limit.
func (s *Semaphore) Limit() int { return s.cfg.Limit }

// Start hands the Semaphore's background work to g: the renewal of its
// leases (one timer, pipelined calls of up to 256 leases each per
// LeaseTTL/3 while it holds any), the timer that wakes waiters when the
// earliest lease of their key ends, and the subscriber that wakes them on
// a release anywhere in the fleet, which holds one connection of the pool's blocking lane, reserved here (a
// pool whose blocking lane is used up fails with pool.ErrOverBudget).
// Start may be called once; a second call fails with ErrAlreadyStarted.
//
// When g closes, waiters and later calls get ErrSemaphoreClosed, and
// leases still held are no longer renewed: each ends when its holder
// releases it or, at the latest, LeaseTTL after its last renewal. Release
// still works after the close, as long as the pool is open.
func (s *Semaphore) Start(g *lifecycle.Group) error {
	if g == nil {
		return fmt.Errorf("%w: semaphore %s: Start: nil group", ErrInvalidArgument, s.name)
	}
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.w.Load() != nil {
		return fmt.Errorf("semaphore %s: Start: %w", s.name, ErrAlreadyStarted)
	}
	task := "ratelimit:semaphore:" + s.name
	res, err := s.p.ReserveBlocking(task+" wake-ups", 1)
	if err != nil {
		return fmt.Errorf("ratelimit: semaphore %s: Start: %w", s.name, err)
	}
	w := newSemWaiters(s.cfg.MaxWaiters)
	if err := g.Go(task+" wake-ups", func(ctx context.Context) error {
		defer w.close()
		return s.subscribe(ctx, res, w)
	}); err != nil {
		_ = res.Release()
		return fmt.Errorf("ratelimit: semaphore %s: Start: %w", s.name, err)
	}
	if err := g.Go(task+" wait timer", w.run); err != nil {
		return fmt.Errorf("ratelimit: semaphore %s: Start: %w", s.name, err)
	}
	if err := g.Every(task+" renew", s.cfg.LeaseTTL/3, s.renew); err != nil {
		return fmt.Errorf("ratelimit: semaphore %s: Start: %w", s.name, err)
	}
	s.w.Store(w)
	return nil
}

// ErrAlreadyStarted: Start was called twice.
var ErrAlreadyStarted = errors.New("ratelimit: already started")

// Acquire takes one of key's Limit slots, waiting until one is free, ctx
// ends or the Semaphore closes, and returns the function that gives it
// back. Call release exactly when the work the slot guards is done; calling
// it again does nothing. Until then the Semaphore renews the lease; if this
// process dies, the slot is free again at most LeaseTTL after the last
// renewal.
//
// Waiting does not poll: a release anywhere in the fleet wakes this key's
// oldest waiter of each process through Pub/Sub, a timer wakes it when the
// key's earliest lease ends (its holder may have died), and a lost wake-up
// costs at most WaitRecheck. Within a process a key's waiters are served
// oldest first; across processes there is no order. Errors:
// ErrInvalidArgument (an empty or too long key), ErrSemaphoreNotStarted,
// ErrSemaphoreClosed, ErrTooManyWaiters (also matching ErrSemaphoreFull),
// ErrSemaphoreUnavailable (Redis could not be asked: the Semaphore fails
// closed), and ctx's error when it ends first (context.DeadlineExceeded for
// a deadline).
func (s *Semaphore) Acquire(ctx context.Context, key string) (release func(), err error) {
	w, err := s.begin(key)
	if err != nil {
		return nil, err
	}
	wt, ok := w.add(key)
	if !ok {
		// Too many waiters here, or closed: one attempt, no waiting.
		if w.isClosed() {
			return nil, s.closedErr()
		}
		r, err := s.try(ctx, key, false)
		if err != nil {
			return nil, err
		}
		if r.admitted {
			return s.hold(key, r.token), nil
		}
		return nil, fmt.Errorf("%w: %s %q: %d callers wait already (SemaphoreConfig.MaxWaiters) (%w)",
			ErrTooManyWaiters, s.name, key, s.cfg.MaxWaiters, ErrSemaphoreFull)
	}
	defer w.leave(wt)
	waited := false
	tryNow := w.isHead(wt)
	for {
		if tryNow {
			r, err := s.try(ctx, key, true)
			if err != nil {
				return nil, err
			}
			if r.admitted {
				if waited {
					s.stats.waited.Add(1)
				}
				return s.hold(key, r.token), nil
			}
			// The earliest lease ends in r.wait: its holder may have died.
			w.setDue(wt, time.Now().Add(min(r.wait, s.cfg.WaitRecheck)))
		}
		waited = true
		select {
		case <-wt.ch:
			tryNow = true
		case <-ctx.Done():
			return nil, fmt.Errorf("ratelimit: semaphore %s %q: waiting: %w", s.name, key, ctx.Err())
		case <-w.done:
			return nil, s.closedErr()
		}
	}
}

// TryAcquire takes one of key's slots if one is free now, and returns the
// function that gives it back; when Limit holders have it, it fails with
// ErrSemaphoreFull. Its other errors are Acquire's.
func (s *Semaphore) TryAcquire(ctx context.Context, key string) (release func(), err error) {
	if _, err := s.begin(key); err != nil {
		return nil, err
	}
	r, err := s.try(ctx, key, false)
	if err != nil {
		return nil, err
	}
	if !r.admitted {
		s.stats.full.Add(1)
		return nil, fmt.Errorf("%w: %s %q: %d of %d held", ErrSemaphoreFull, s.name, key, r.holders, s.cfg.Limit)
	}
	return s.hold(key, r.token), nil
}

// begin checks key and that the Semaphore runs.
func (s *Semaphore) begin(key string) (*semWaiters, error) {
	switch {
	case key == "":
		return nil, fmt.Errorf("%w: semaphore %s: empty key", ErrInvalidArgument, s.name)
	case len(key) > MaxSemaphoreKeyBytes:
		return nil, fmt.Errorf("%w: semaphore %s: key of %d bytes, the limit is %d (MaxSemaphoreKeyBytes)",
			ErrInvalidArgument, s.name, len(key), MaxSemaphoreKeyBytes)
	}
	w := s.w.Load()
	if w == nil {
		return nil, fmt.Errorf("%w: semaphore %s: call Start first (it renews the leases)", ErrSemaphoreNotStarted, s.name)
	}
	if w.isClosed() {
		return nil, s.closedErr()
	}
	return w, nil
}

func (s *Semaphore) closedErr() error {
	return fmt.Errorf("%w: semaphore %s: its group has closed", ErrSemaphoreClosed, s.name)
}

// semReply is the outcome of one acquire script.
type semReply struct {
	admitted bool
	holders  int64
	wait     time.Duration // until the earliest lease ends, when denied
	token    string
}

// try runs the acquire script once for a new token; mark leaves the
// waiting mark when denied.
func (s *Semaphore) try(ctx context.Context, key string, mark bool) (semReply, error) {
	actx, err := s.p.AdmitContext(ctx)
	if err != nil {
		s.stats.unavailable.Add(1)
		return semReply{}, fmt.Errorf("%w: %s %q: %w", ErrSemaphoreUnavailable, s.name, key, err)
	}
	token := s.tokens + strconv.FormatUint(s.seq.Add(1), 36)
	markArg := ""
	if mark {
		markArg = s.markArg
	}
	keys := []string{s.Key(key), s.markKey(key)}
	rctx, cancel, bounded := s.bound(actx)
	v, err := semAcquireScript.Run(rctx, s.p.Client(), keys, s.nowArg(), s.ttlArg, s.limitArg, token, markArg).Int64Slice()
	timedOut := err != nil && bounded && ended(rctx)
	cancel()
	if err == nil && len(v) != 3 {
		err = fmt.Errorf("acquire script replied %v", v)
	}
	if err != nil {
		return semReply{}, s.failed(ctx, key, token, err, timedOut)
	}
	s.stats.redisCalls.Add(1)
	return semReply{admitted: v[0] == 1, holders: v[1], wait: time.Duration(v[2]) * time.Microsecond, token: token}, nil
}

// bound returns ctx bounded by Config.Timeout through the pool (so that
// running it out counts toward marking Redis down), unless the caller's
// deadline comes first.
func (s *Semaphore) bound(ctx context.Context) (context.Context, context.CancelFunc, bool) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= s.cfg.Timeout {
		return ctx, func() {}, false
	}
	rctx, cancel := pool.WithTimeout(ctx, s.cfg.Timeout)
	return rctx, cancel, true
}

// failed is the error of an acquire script that failed with err. The
// script may have run and given token a lease: the next renewal removes it.
func (s *Semaphore) failed(ctx context.Context, key, token string, err error, timedOut bool) error {
	if !errors.Is(err, pool.ErrUnavailable) && !errors.Is(err, pool.ErrLaneExhausted) {
		s.abandon(key, token)
	}
	if cerr := callerEnded(ctx, err); cerr != nil {
		return fmt.Errorf("ratelimit: semaphore %s %q: %w", s.name, key, cerr)
	}
	if errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("ratelimit: semaphore %s %q: %w", s.name, key, err)
	}
	if timedOut {
		err = fmt.Errorf("no answer within SemaphoreConfig.Timeout %s: %w", s.cfg.Timeout, err)
	}
	if !errors.Is(err, pool.ErrUnavailable) {
		s.redisError("acquire failed", err)
	}
	s.stats.unavailable.Add(1)
	return fmt.Errorf("%w: %s %q: %w", ErrSemaphoreUnavailable, s.name, key, err)
}

func (s *Semaphore) nowArg() string {
	if s.cfg.Now == nil {
		return ""
	}
	return strconv.FormatInt(s.cfg.Now().UnixMicro(), 10)
}

// hold records token as held and returns its release.
func (s *Semaphore) hold(key, token string) func() {
	s.mu.Lock()
	m := s.held[key]
	if m == nil {
		m = map[string]struct{}{}
		s.held[key] = m
	}
	m[token] = struct{}{}
	s.mu.Unlock()
	s.stats.acquired.Add(1)
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			s.release(key, token)
		}
	}
}

// release gives token's slot back: the renewer forgets it first, then the
// script removes it (and wakes waiters, if any). A release that fails
// leaves it to the next renewal to remove, or to expire within LeaseTTL.
func (s *Semaphore) release(key, token string) {
	s.mu.Lock()
	if m := s.held[key]; m != nil {
		delete(m, token)
		if len(m) == 0 {
			delete(s.held, key)
		}
	}
	s.mu.Unlock()
	s.stats.released.Add(1)
	ctx, cancel := pool.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	err := semReleaseScript.Run(ctx, s.p.Client(), []string{s.Key(key), s.markKey(key)}, token, s.channel, key).Err()
	if err != nil {
		s.abandon(key, token)
		s.stats.releaseErrors.Add(1)
		if !errors.Is(err, pool.ErrUnavailable) {
			s.redisError("release failed; the next renewal removes the lease, or it expires", err)
		}
	}
}

// abandon queues token's removal for the next renewal.
func (s *Semaphore) abandon(key, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nAbandoned >= maxAbandoned {
		return // it expires within LeaseTTL
	}
	s.abandoned[key] = append(s.abandoned[key], token)
	s.nAbandoned++
}

// redisError counts a failed call and logs it, at most once a second.
func (s *Semaphore) redisError(what string, err error) {
	s.stats.redisErrors.Add(1)
	s.logf(slog.LevelWarn, "ratelimit: semaphore: "+what, "err", err)
}

func (s *Semaphore) logf(level slog.Level, msg string, args ...any) {
	now := time.Now().UnixMicro()
	last := s.lastLog.Load()
	if now-last < int64(time.Second/time.Microsecond) || !s.lastLog.CompareAndSwap(last, now) {
		return
	}
	s.cfg.Logger.Log(context.Background(), level, msg, append([]any{"semaphore", s.name}, args...)...)
}

// SemaphoreStats counts a Semaphore's work since NewSemaphore.
type SemaphoreStats struct {
	Acquired uint64 `json:"acquired"`
	// Waited counts acquisitions that waited; Full TryAcquires turned
	// away.
	Waited   uint64 `json:"waited"`
	Full     uint64 `json:"full"`
	Released uint64 `json:"released"`
	// Held is the leases held now; Waiting the callers in Acquire now
	// (asking Redis or waiting), at most SemaphoreConfig.MaxWaiters.
	Held    int `json:"held"`
	Waiting int `json:"waiting"`
	// Unavailable counts calls failed with ErrSemaphoreUnavailable.
	Unavailable uint64 `json:"unavailable"`
	// RedisCalls counts acquire scripts that ran; RedisErrors failed calls
	// of any kind (renewals included), ReleaseErrors failed releases.
	RedisCalls    uint64 `json:"redis_calls"`
	RedisErrors   uint64 `json:"redis_errors"`
	ReleaseErrors uint64 `json:"release_errors"`
	// Renewals counts renewal rounds Redis answered in full, Readmitted
	// leases found gone and taken back (room was left), Lost leases found
	// gone with no room left: their holders ran past their slot.
	Renewals   uint64 `json:"renewals"`
	Readmitted uint64 `json:"readmitted"`
	Lost       uint64 `json:"lost"`
	// Wakes counts release messages received; Subscribed says whether the
	// subscriber listens now.
	Wakes      uint64 `json:"wakes"`
	Subscribed bool   `json:"subscribed"`
}

type semCounters struct {
	acquired, waited, full, released, unavailable, redisCalls, redisErrors,
	releaseErrors, renewals, readmitted, lost atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (s *Semaphore) Stats() SemaphoreStats {
	st := SemaphoreStats{
		Acquired:      s.stats.acquired.Load(),
		Waited:        s.stats.waited.Load(),
		Full:          s.stats.full.Load(),
		Released:      s.stats.released.Load(),
		Unavailable:   s.stats.unavailable.Load(),
		RedisCalls:    s.stats.redisCalls.Load(),
		RedisErrors:   s.stats.redisErrors.Load(),
		ReleaseErrors: s.stats.releaseErrors.Load(),
		Renewals:      s.stats.renewals.Load(),
		Readmitted:    s.stats.readmitted.Load(),
		Lost:          s.stats.lost.Load(),
	}
	s.mu.Lock()
	for _, m := range s.held {
		st.Held += len(m)
	}
	s.mu.Unlock()
	if w := s.w.Load(); w != nil {
		st.Waiting = w.count()
		st.Wakes = w.wakes.Load()
		st.Subscribed = w.subscribed.Load()
	}
	return st
}
