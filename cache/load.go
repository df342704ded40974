package cache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// writeTimeout bounds the Redis write after a load. It runs on a context of
// its own so that a loader that used its whole LoadTimeout still gets its
// value written.
const writeTimeout = 5 * time.Second

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
// Tags(...) among opts tags the value this call's load writes (see Tags).
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
func (c *Cache[V]) GetOrLoad(ctx context.Context, key string, load func(ctx context.Context) (V, error), opts ...Option) (V, error) {
	if load == nil {
		var zero V
		return zero, c.nilLoader("GetOrLoad", key)
	}
	return c.getOrLoad(ctx, "GetOrLoad", key, load, nil, opts)
}

// GetOrLoadTTL is GetOrLoad with a loader that also says how long its value
// lives in Redis (from an HTTP Cache-Control max-age, say): zero means
// Config.TTL, and a negative TTL fails the load with ErrInvalid (nothing is
// cached; a loader's duration arithmetic that overflowed is caught so). The
// TTL goes through Config.TTLJitter and is rounded up to a whole
// millisecond, as Set's; a loader's ErrNotFound is cached for
// Config.NegativeTTL whatever TTL came with it. With Config.RefreshAfter
// the value is refreshed after ttl*RefreshAfter/TTL. opts are
// GetOrLoad's.
func (c *Cache[V]) GetOrLoadTTL(ctx context.Context, key string, load func(ctx context.Context) (V, time.Duration, error), opts ...Option) (V, error) {
	if load == nil {
		var zero V
		return zero, c.nilLoader("GetOrLoadTTL", key)
	}
	return c.getOrLoad(ctx, "GetOrLoadTTL", key, nil, load, opts)
}

func (c *Cache[V]) nilLoader(op, key string) error {
	if err := c.checkKey(op, key); err != nil {
		return err
	}
	return fmt.Errorf("%w: cache %q: %s %q: nil loader", ErrInvalid, c.name, op, key)
}

// loaderOf turns either kind of loader into a ttlLoader. It is called only
// past a local hit, so a hit allocates nothing.
func loaderOf[V any](load func(ctx context.Context) (V, error), loadTTL ttlLoader[V]) ttlLoader[V] {
	if loadTTL != nil {
		return loadTTL
	}
	return func(ctx context.Context) (V, time.Duration, error) {
		v, err := load(ctx)
		return v, 0, err
	}
}

// flightOut is a flight's result: its value (a V, or nil) and whether it
// got past its Redis read, to call its loader or wait for another
// instance's (Stats.LoaderWaits).
type flightOut struct {
	val    any
	loaded bool
}

// getOrLoad is GetOrLoad and GetOrLoadTTL; exactly one of load and loadTTL
// is set.
func (c *Cache[V]) getOrLoad(ctx context.Context, op, key string, load func(ctx context.Context) (V, error), loadTTL ttlLoader[V], opts []Option) (V, error) {
	var zero V
	if err := c.checkKey(op, key); err != nil {
		return zero, err
	}
	o, err := c.callOptions(op, key, opts)
	if err != nil {
		return zero, err
	}
	// The tags ride on the context, bound to this cache and key: read by
	// writeLoaded on the flight's context, and by a refresh's, which
	// carries this call's values.
	ctx = withTags(ctx, c, key, o.tags)
	if v, hit, refresh, err := c.fromLocalClaim(key); hit {
		if refresh {
			c.requestRefresh(ctx, key, loaderOf(load, loadTTL))
		}
		return v, err
	}
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("cache %q: %s %q: %w", c.name, op, key, err)
	}
	lf := loaderOf(load, loadTTL)
	var led atomic.Bool
	ch := c.flights.DoChan(key, func() (any, error) {
		led.Store(true)
		var out flightOut
		val, err := c.flight(ctx, key, lf, &out.loaded)
		out.val = val
		return out, err
	})
	select {
	case r := <-ch:
		if !led.Load() {
			c.st.loadWaiters.Add(1)
		}
		out, _ := r.Val.(flightOut)
		if out.loaded {
			c.st.loaderWaits.Add(1)
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
		v, _ := out.val.(V)
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
//
// It sets *loaded once it goes past its Redis read (to wait for another
// instance's load, or to load).
func (c *Cache[V]) flight(callerCtx context.Context, key string, load ttlLoader[V], loaded *bool) (any, error) {
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
	if v, hit, err := c.fromLocal(key); hit {
		return v, err
	}
	gen := c.localGen(key)
	v, found, stale, err := c.readRedis(ctx, key)
	if found {
		if stale {
			c.refreshFound(callerCtx, key, load)
		}
		return v, err // err: cached as not found
	}
	redisFailed := false
	switch {
	case errors.Is(err, ErrNotFound):
	case errors.Is(err, ErrCodec):
		// Undecodable (another V, say, before a deploy): getRedis deleted
		// it, so load as for a miss rather than fail until it expires.
	case ctx.Err() != nil:
		// Close cancelled the flight (or its time ran out): Redis did
		// nothing wrong, and there is nobody left to load for.
		return nil, c.flightEnded(ctx, key, "reading Redis", err)
	default:
		// Redis is down or failing (or its lane is exhausted): load without
		// it, and keep the value here only (see keep.localOnly).
		redisFailed = true
	}
	// From here on the flight may last LockTTL+LoadTimeout: only
	// Config.MaxLoads do at once.
	if !c.loads.startLoad() {
		c.st.loadsRefused.Add(1)
		return nil, fmt.Errorf("cache %q: GetOrLoad %q: %w (Config.MaxLoads is %d)", c.name, key, ErrTooManyLoads, c.cfg.MaxLoads)
	}
	defer c.loads.endLoad()
	*loaded = true
	k := keepLocalOnly
	if !redisFailed {
		var done bool
		if k, v, done, err = c.lockForLoad(ctx, key, gen); done {
			if err != nil {
				return nil, err
			}
			return v, nil
		}
	}
	return c.load(ctx, key, load, k, gen)
}

// lockForLoad says where the value of the load a flight is about to make
// will go: written under the load lock it takes now (or, with
// Config.NoLock, written if the key is still missing), or kept locally only
// when Redis failed while it waited for the lock. done reports that there is
// nothing to load: another instance's load answered (v, or err with
// ErrNotFound), or ctx ended (err).
func (c *Cache[V]) lockForLoad(ctx context.Context, key string, gen uint64) (k keep, v V, done bool, err error) {
	if c.cfg.NoLock {
		return keepIfMissing, v, false, nil
	}
	v, done, token, err := c.lockOrWait(ctx, key, gen)
	switch {
	case done:
		return keep{}, v, true, err
	case err == nil:
		return keepLocked(token), v, false, nil
	case ctx.Err() != nil:
		return keep{}, v, true, c.flightEnded(ctx, key, "waiting for another instance's load", err)
	}
	// Redis failed while we waited: load here rather than fail, and keep the
	// value here only.
	c.log.Warn("cache: lock check failed; loading without the lock, keeping the value locally only", "key", key, "err", err)
	return keepLocalOnly, v, false, nil
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
	// tagged: the tags the value is written with and their epochs, read
	// before the loader ran (see tagWriteOf); nil for an untagged load.
	tagged *tagWrite
	// writeFailed, if set, is set when the value could not be written to
	// Redis (a refresh counts that as a failed refresh).
	writeFailed *bool
}

var (
	keepLocalOnly = keep{localOnly: true}
	keepIfMissing = keep{} // Config.NoLock: SET NX
)

func keepLocked(token string) keep { return keep{token: token} }

// load calls the loader and keeps what it returns as k says.
func (c *Cache[V]) load(ctx context.Context, key string, load ttlLoader[V], k keep, gen uint64) (any, error) {
	c.st.loads.Add(1)
	if !k.localOnly {
		k.tagged = c.tagWriteOf(ctx, key) // before the loader reads the source
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	v, ttl, err := load(lctx)
	cancel()
	if err == nil && ttl < 0 {
		err = fmt.Errorf("%w: the loader returned a negative TTL (%s)", ErrInvalid, ttl)
	}
	if ttl == 0 {
		ttl = c.cfg.TTL
	}

	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer wcancel()
	switch {
	case err == nil:
		e, err := c.encode(key, v)
		if err != nil {
			c.st.loadErrors.Add(1)
			c.release(wctx, key, k.token)
			return nil, err
		}
		c.keepLoaded(wctx, key, e, ttl, k, gen)
		return v, nil
	case errors.Is(err, ErrNotFound):
		if c.cfg.NegativeTTL > 0 {
			c.keepLoaded(wctx, key, negative[V](), c.cfg.NegativeTTL, k, gen)
		} else {
			c.release(wctx, key, k.token)
		}
		return nil, fmt.Errorf("cache %q: load %q: %w", c.name, key, err)
	default:
		c.release(wctx, key, k.token)
		if ctx.Err() != nil && (c.loads.isClosed() || errors.Is(context.Cause(ctx), ErrClosed)) {
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

// keepLoaded keeps a loaded value (or a negative entry) as k says: written
// to Redis with the invalidation and kept locally, or, when that is not to
// be done or fails, kept in the local tier only. A value a Set or Delete
// kept out of Redis is not kept locally either; the callers still get it.
func (c *Cache[V]) keepLoaded(ctx context.Context, key string, e encoded[V], ttl time.Duration, k keep, gen uint64) {
	if !k.localOnly {
		redisTTL := c.redisTTL(ttl)
		c.stamp(&e, redisTTL)
		start := c.clock()
		wrote, err := c.writeLoaded(ctx, key, e.data, redisTTL, k)
		if err == nil {
			if wrote {
				c.storeLocal(key, e, start, redisTTL, gen)
			} else {
				c.log.Debug("cache: a Set or Delete came while loading; the loaded value is not cached", "key", key)
			}
			return
		}
		// The value is good; only caching it failed.
		if k.writeFailed != nil {
			*k.writeFailed = true
		}
		c.log.Warn("cache: could not write a loaded value to Redis; keeping it locally only", "key", key, "not_found", e.notFound, "err", err)
		c.release(ctx, key, k.token)
	}
	// Redis being unreachable, no other instance can be told about it; the
	// subscriber flushes the tier when it reconnects. gen is the generation
	// taken before the loader ran, as for a write that succeeds: if the
	// key's shard was written or invalidated since, the loader may have
	// read data older than that change, and the key is dropped instead.
	c.storeLocal(key, e, c.clock(), ttl, gen)
}

// writeLoaded writes a loaded value to Redis: under the load lock k.token
// holds, or, without one (Config.NoLock), if the key is still missing. It
// reports whether it wrote.
func (c *Cache[V]) writeLoaded(ctx context.Context, key string, data []byte, ttl time.Duration, k keep) (wrote bool, err error) {
	token := k.token
	if k.tagged != nil {
		wrote, err = c.writeLoadedTagged(ctx, k.tagged, key, data, ttl, token)
	} else if token != "" {
		wrote, err = c.fillLocked(ctx, key, data, ttl, token)
	} else {
		wrote, err = c.fillIfMissing(ctx, key, data, ttl)
	}
	if err != nil {
		c.st.redisErrors.Add(1)
		return false, fmt.Errorf("cache %q: set %q: %w", c.name, key, err)
	}
	return wrote, nil
}
