package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Waiting for another instance's load: the holder publishes a note when it
// has written the value (or given up), and the waiters wake on it. A note
// can be lost (no subscriber running, a reconnect), so a waiter also checks
// again after a backoff that starts at lockWaitMin and doubles up to
// lockWaitMax, never later than the lock's expiry. A load of a second costs a
// waiter about eight checks without the note and one with it.
const (
	lockWaitMin = 5 * time.Millisecond
	lockWaitMax = 500 * time.Millisecond
	// writeTimeout bounds the Redis write after a load. It runs on a
	// context of its own so that a loader that used its whole LoadTimeout
	// still gets its value written.
	writeTimeout = 5 * time.Second
)

// GetOrLoad returns key's value from the local tier or Redis; if neither has
// it, load computes it, and the value is written to both with Config.TTL.
//
// One call of load runs per key per process at a time; with the
// cross-instance lock (the default) one runs per key across every instance
// of the cache, and the others wait for its value. load runs on a context of
// its own, bounded by Config.LoadTimeout and carrying the first caller's
// values but not its cancellation, so a caller that gives up (each honours
// its own ctx and returns an error matching ctx's) neither cancels the load
// nor loses its Redis write.
//
// load reports a missing key by returning ErrNotFound (or an error wrapping
// it); with Config.NegativeTTL that answer is cached. Other errors are
// returned to every caller waiting for that load and nothing is cached.
// When the cache's group closes during a load, Close cancels it and its
// callers get ErrClosed (a caller whose own ctx has ended gets ctx's error);
// that is neither a failed load nor a Redis error. A panic in load is not
// recovered: it crashes the program, as in
// x/sync/singleflight's DoChan, where it runs.
//
// While Redis is down a local hit serves, and a miss calls load (still once
// per key per process) without waiting on Redis; the value (or, with
// NegativeTTL, the ErrNotFound) is kept locally only. So is the value of any
// load that could not ask Redis for the cross-instance lock: without the
// lock, a write could undo a Delete made while the loader ran.
func (c *Cache[V]) GetOrLoad(ctx context.Context, key string, load func(ctx context.Context) (V, error)) (V, error) {
	var zero V
	if err := c.checkKey("GetOrLoad", key); err != nil {
		return zero, err
	}
	if load == nil {
		return zero, fmt.Errorf("%w: cache %q: GetOrLoad %q: nil loader", ErrInvalid, c.name, key)
	}
	if v, notFound, ok := c.getLocal(key); ok {
		if notFound {
			return zero, ErrNotFound
		}
		return v, nil
	}
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("cache %q: GetOrLoad %q: %w", c.name, key, err)
	}
	var led atomic.Bool
	ch := c.flights.DoChan(key, func() (any, error) {
		led.Store(true)
		return c.flight(ctx, key, load)
	})
	select {
	case r := <-ch:
		if !led.Load() {
			c.st.loadWaiters.Add(1)
		}
		if r.Err != nil {
			if errors.Is(r.Err, ErrClosed) && ctx.Err() != nil {
				// Both ended at once: the caller's own reason first, as in
				// the case below.
				return zero, fmt.Errorf("cache %q: GetOrLoad %q: gave up waiting for the load: %w", c.name, key, ctx.Err())
			}
			return zero, r.Err
		}
		// Not r.Val.(V): with V an interface type, a nil value (a loader's
		// nil, a JSON null) would fail the assertion and panic.
		v, _ := r.Val.(V)
		return v, nil
	case <-ctx.Done():
		// The flight goes on without this caller and still writes its value.
		if !led.Load() {
			c.st.loadWaiters.Add(1)
		}
		return zero, fmt.Errorf("cache %q: GetOrLoad %q: gave up waiting for the load: %w", c.name, key, ctx.Err())
	}
}

// flight is the one call per key per process behind GetOrLoad. It runs in
// singleflight's goroutine, which outlives callers that give up; it is
// bounded by LockTTL+LoadTimeout (plus writeTimeout for the write), ends
// early when the group that started the cache closes, and that group's Close
// waits for it. Past its Redis read (which holds or waits for a connection
// of the pool's request lane, so the lane bounds those), it needs one of
// Config.MaxLoads slots to wait for the lock or load, or it fails at once
// with ErrTooManyLoads.
func (c *Cache[V]) flight(callerCtx context.Context, key string, load func(ctx context.Context) (V, error)) (any, error) {
	ctx, cancel, ok := c.loads.begin(callerCtx, c.cfg.LockTTL+c.cfg.LoadTimeout)
	if !ok {
		return nil, fmt.Errorf("cache %q: GetOrLoad %q: %w", c.name, key, ErrClosed)
	}
	defer c.loads.end()
	defer cancel()

	// A caller that missed the local tier just before the previous flight
	// for key stored its value, and joined after that flight ended, finds it
	// here instead of loading again (with Redis down nothing else would stop
	// it).
	if v, notFound, ok := c.getLocal(key); ok {
		if notFound {
			return nil, ErrNotFound
		}
		return v, nil
	}
	var gen uint64
	if c.local != nil {
		gen = c.local.gen(key)
	}
	v, found, err := c.getRedis(ctx, key)
	redisFailed := false
	switch {
	case found:
		if err != nil {
			return nil, err // cached as not found
		}
		return v, nil
	case errors.Is(err, ErrNotFound):
	case errors.Is(err, ErrCodec):
		// Undecodable (another V, say, before a deploy): getRedis deleted
		// it, so load as for a miss rather than fail until it expires.
	case ctx.Err() != nil:
		// Close cancelled the flight (or its time ran out): Redis did
		// nothing wrong, and there is nobody left to load for.
		return nil, c.flightEnded(ctx, key, "reading Redis", err)
	default:
		redisFailed = true
	}
	// From here on the flight may last LockTTL+LoadTimeout: only
	// Config.MaxLoads do at once.
	if !c.loads.startLoad() {
		c.st.loadsRefused.Add(1)
		return nil, fmt.Errorf("cache %q: GetOrLoad %q: %w (Config.MaxLoads is %d)", c.name, key, ErrTooManyLoads, c.cfg.MaxLoads)
	}
	defer c.loads.endLoad()
	if redisFailed {
		// Redis is down or failing (or its lane is exhausted): load without
		// it, and keep the value here only (see keep.localOnly).
		return c.load(ctx, key, load, keepLocalOnly, gen)
	}
	k := keepIfMissing // Config.NoLock
	if !c.cfg.NoLock {
		var done bool
		var token string
		v, done, token, err = c.lockOrWait(ctx, key, gen)
		switch {
		case done:
			if err != nil {
				return nil, err
			}
			return v, nil
		case err != nil:
			if ctx.Err() != nil {
				return nil, c.flightEnded(ctx, key, "waiting for another instance's load", err)
			}
			// Redis failed while we waited: load here rather than fail, and
			// keep the value here only.
			c.log.Warn("cache: lock check failed; loading without the lock, keeping the value locally only", "key", key, "err", err)
			k = keepLocalOnly
		default:
			k = keepLocked(token)
		}
	}
	return c.load(ctx, key, load, k, gen)
}

// keep says where a loaded value (or a loader's ErrNotFound, with
// Config.NegativeTTL) goes.
type keep struct {
	// token is the load lock this instance holds, if any: the write is made
	// only while it holds, and releases it; so does a failed load.
	token string
	// localOnly: the load could not ask Redis for the lock (Redis failing,
	// its lane exhausted), so no lock protects a write from a Set or Delete
	// made while the loader ran; SET NX would lose to a Set but undo a
	// Delete ("update the database, then invalidate") for the value's whole
	// TTL. The value is kept in the local tier only, where LocalTTL and the
	// invalidations bound it.
	localOnly bool
}

var (
	keepLocalOnly = keep{localOnly: true}
	keepIfMissing = keep{} // Config.NoLock: SET NX
)

func keepLocked(token string) keep { return keep{token: token} }

// load calls the loader and keeps what it returns as k says.
func (c *Cache[V]) load(ctx context.Context, key string, load func(ctx context.Context) (V, error), k keep, gen uint64) (any, error) {
	c.st.loads.Add(1)
	lctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	v, err := load(lctx)
	cancel()

	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer wcancel()
	switch {
	case err == nil:
		data, err := c.encode(key, v)
		if err != nil {
			c.st.loadErrors.Add(1)
			c.release(wctx, key, k.token)
			return nil, err
		}
		c.keepLoaded(wctx, key, v, false, data, c.cfg.TTL, k, gen)
		return v, nil
	case errors.Is(err, ErrNotFound):
		if c.cfg.NegativeTTL > 0 {
			var zero V
			c.keepLoaded(wctx, key, zero, true, []byte(notFoundMarker), c.cfg.NegativeTTL, k, gen)
		} else {
			c.release(wctx, key, k.token)
		}
		return nil, fmt.Errorf("cache %q: load %q: %w", c.name, key, err)
	default:
		c.release(wctx, key, k.token)
		if ctx.Err() != nil && c.loads.isClosed() {
			// Close cancelled the loader: not a failed load.
			return nil, fmt.Errorf("cache %q: load %q: %w (the loader returned: %v)", c.name, key, ErrClosed, err)
		}
		c.st.loadErrors.Add(1)
		return nil, fmt.Errorf("cache %q: load %q: %w", c.name, key, err)
	}
}

// flightEnded is the error of a flight whose context ended while it was
// doing what: ErrClosed when the cache's group closed (its Close cancels the
// flights), else ctx's own error, with err the call's.
func (c *Cache[V]) flightEnded(ctx context.Context, key, what string, err error) error {
	if c.loads.isClosed() {
		return fmt.Errorf("cache %q: GetOrLoad %q: %s: %w", c.name, key, what, ErrClosed)
	}
	return fmt.Errorf("cache %q: GetOrLoad %q: %s: %w (%v)", c.name, key, what, context.Cause(ctx), err)
}

// keepLoaded keeps a loaded value (or, notFound, a negative entry) as k
// says: written to Redis with the invalidation, or, when that is not to be
// done or fails, in the local tier only.
func (c *Cache[V]) keepLoaded(ctx context.Context, key string, v V, notFound bool, data []byte, ttl time.Duration, k keep, gen uint64) {
	if !k.localOnly {
		err := c.write(ctx, key, v, notFound, data, ttl, true, k.token, gen)
		if err == nil {
			return
		}
		// The value is good; only caching it failed.
		c.log.Warn("cache: could not write a loaded value to Redis; keeping it locally only", "key", key, "not_found", notFound, "err", err)
		c.release(ctx, key, k.token)
	}
	c.storeLocal(key, v, notFound, len(data), ttl, gen)
}

// storeLocal keeps a loaded value locally when Redis could not take it.
// Redis being unreachable, no other instance can be told about it; the
// subscriber flushes the tier when it reconnects.
//
// gen is the generation taken before the loader ran, as for a write that
// succeeds: if the key's shard was written or invalidated since, the loader
// may have read data older than that change, and the key is dropped instead.
func (c *Cache[V]) storeLocal(key string, v V, notFound bool, size int, ttl time.Duration, gen uint64) {
	if c.local == nil {
		return
	}
	c.local.store(key, v, notFound, size, c.localExpiry(c.clock(), ttl), gen)
}

// lockOrWait takes key's load lock, or waits until the instance holding it
// has written the value. It returns the value (done, with ErrNotFound for a
// negative entry), or the lock's token, or an error when Redis failed or ctx
// ended.
func (c *Cache[V]) lockOrWait(ctx context.Context, key string, gen uint64) (v V, done bool, token string, err error) {
	token = strconv.FormatUint(c.id, 36) + ":" + strconv.FormatUint(c.st.lockTokens.Add(1), 36)
	keys := []string{c.RedisKey(key), c.lockKey(key)}
	lockMS := strconv.FormatInt(c.cfg.LockTTL.Milliseconds(), 10)
	delay := lockWaitMin
	undecodable := 0
	for attempt := 0; ; attempt++ {
		// Registered before the check, so a note published after it is not
		// missed.
		wake := c.addWaiter(key)
		start := c.clock()
		r, err := c.scripts.lock.Run(ctx, c.p.Client(), keys, token, lockMS).Slice()
		if err != nil {
			c.removeWaiter(key, wake)
			if ctx.Err() == nil {
				c.st.redisErrors.Add(1)
			}
			return v, false, "", err
		}
		state, _ := r[0].(int64)
		switch state {
		case lockValue:
			c.removeWaiter(key, wake)
			data, _ := r[1].(string)
			pttl, _ := r[2].(int64)
			v, notFound, err := c.decode(key, []byte(data))
			if err != nil {
				c.dropUndecodable(ctx, key, []byte(data))
				if undecodable++; undecodable > 1 {
					// Someone keeps writing values this instance cannot
					// read (an older deploy): load without Redis.
					return v, false, "", err
				}
				continue // deleted: take the lock now
			}
			c.st.redisHits.Add(1)
			if c.local != nil {
				c.local.fill(key, v, notFound, len(data), c.localExpiry(start, pttlDuration(pttl)), gen)
			}
			if notFound {
				return v, true, "", fmt.Errorf("cache %q: %q: %w", c.name, key, ErrNotFound)
			}
			return v, true, "", nil
		case lockTaken:
			c.removeWaiter(key, wake)
			return v, false, token, nil
		}
		// Held by another instance: wait for its note, or check again.
		if attempt == 0 {
			c.st.lockWaits.Add(1)
		}
		wait := delay/2 + rand.N(delay/2+1) // jittered, so instances do not check in step
		if len(r) > 1 {
			if left, _ := r[1].(int64); left >= 0 {
				wait = min(wait, time.Duration(left+1)*time.Millisecond)
			}
		}
		delay = min(delay*2, lockWaitMax)
		t := time.NewTimer(wait)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.removeWaiter(key, wake)
			return v, false, "", ctx.Err()
		}
		t.Stop()
		c.removeWaiter(key, wake)
	}
}

// pttlDuration turns a PTTL reply into what go-redis's PTTL returns: a
// duration, or -1 (no expiry) and -2 (no key) as they are.
func pttlDuration(ms int64) time.Duration {
	if ms < 0 {
		return time.Duration(ms)
	}
	return time.Duration(ms) * time.Millisecond
}

// release gives up the load lock without a value and tells the waiters, so
// one of them takes over at once instead of at the lock's expiry.
func (c *Cache[V]) release(ctx context.Context, key, token string) {
	if token == "" {
		return
	}
	sent, _, err := c.writeLocked(ctx, key, nil, 0, token)
	if err != nil {
		c.log.Warn("cache: could not release the load lock; it expires by itself", "key", key, "err", err)
	}
	c.st.invalSent.Add(uint64(sent))
}

// writeLocked runs the fill script: write data (if any) and release the
// lock if token still holds it, and publish the note that wakes waiters and
// drops other instances' copies. It returns how many messages it published
// and whether it wrote the value.
func (c *Cache[V]) writeLocked(ctx context.Context, key string, data []byte, ttl time.Duration, token string) (sent int, wrote bool, err error) {
	msg := ""
	if !c.cfg.NoInvalidation {
		msg = keyMessages(c.id, opLoaded, []string{key})[0]
		sent = 1
	}
	keys := []string{c.RedisKey(key), c.lockKey(key)}
	n, err := c.scripts.fill.Run(ctx, c.p.Client(), keys, data, ttl.Milliseconds(), token, c.channel, msg).Int64()
	if err != nil {
		return 0, false, err
	}
	return sent, n == 1, nil
}

// waiter is the flights waiting for one key's value: usually one, but a
// flight that Forget left running and the one started after it can wait
// together. They share the channel the note closes, and the entry stays
// until the last of them leaves.
type waiter struct {
	ch chan struct{}
	n  int // flights registered on ch
}

func (c *Cache[V]) addWaiter(key string) chan struct{} {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	w := c.waiters[key]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		c.waiters[key] = w
	}
	w.n++
	return w.ch
}

func (c *Cache[V]) removeWaiter(key string, ch chan struct{}) {
	c.waitMu.Lock()
	// After a wake the entry is gone (or is a newer one): nothing to do.
	if w := c.waiters[key]; w != nil && w.ch == ch {
		if w.n--; w.n == 0 {
			delete(c.waiters, key)
		}
	}
	c.waitMu.Unlock()
}

// wake wakes the flights waiting for key's value, if any.
func (c *Cache[V]) wake(key string) {
	c.waitMu.Lock()
	if w := c.waiters[key]; w != nil {
		close(w.ch)
		delete(c.waiters, key)
	}
	c.waitMu.Unlock()
}

// wakeAll wakes every waiting flight (after a flush: notes may have been
// lost).
func (c *Cache[V]) wakeAll() {
	c.waitMu.Lock()
	for k, w := range c.waiters {
		close(w.ch)
		delete(c.waiters, k)
	}
	c.waitMu.Unlock()
}

// loadTracker counts flights in progress, gives them a context that ends
// when the cache's group closes, and lets that Close wait for them. It also
// holds the semaphore of Config.MaxLoads: a flight takes a slot before it
// waits for another instance's load or calls its loader.
type loadTracker struct {
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{} // one element per flight past its Redis read

	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed when n drops to 0 after close

	// done mirrors closed for readers without mu: every call checks it
	// first.
	done atomic.Bool
}

func (t *loadTracker) init(maxLoads int) {
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.slots = make(chan struct{}, maxLoads)
}

// startLoad takes one of the Config.MaxLoads slots, without waiting: it
// reports false when they are all taken. endLoad gives it back.
func (t *loadTracker) startLoad() bool {
	select {
	case t.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (t *loadTracker) endLoad() { <-t.slots }

// begin starts a flight on a context that carries parent's values, ends
// after d or when the tracker closes, and is not cancelled with parent.
func (t *loadTracker) begin(parent context.Context, d time.Duration) (context.Context, context.CancelFunc, bool) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, nil, false
	}
	t.n++
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), d)
	stop := context.AfterFunc(t.ctx, cancel)
	return ctx, func() { stop(); cancel() }, true
}

func (t *loadTracker) end() {
	t.mu.Lock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

// isClosed reports whether the cache's group has closed.
func (t *loadTracker) isClosed() bool { return t.done.Load() }

func (t *loadTracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// close cancels the flights in progress, refuses new ones, and waits for
// them to return or ctx to end.
func (t *loadTracker) close(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	t.done.Store(true)
	t.cancel()
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle, n := t.idle, t.n
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d load(s) still running: %w", n, ctx.Err())
	}
}
