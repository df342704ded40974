package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// Cache is a two-tier typed cache: a bounded local tier in front of Redis,
// with loads that run once per key across every instance sharing the cache's
// name, and invalidation of the other instances' local copies.
//
// A Cache has no useful zero value; build it with New. It is safe for
// concurrent use. It holds no resource of its own until Start, which hands
// its subscriber and the wait for in-flight loads to a lifecycle group; the
// group's Close stops them and closes the cache: every call after that fails
// with ErrClosed. The pool belongs to the caller.
//
// Values in the local tier are shared, not copied: a V that holds pointers,
// slices or maps must be treated as read-only by everyone who gets it.
type Cache[V any] struct {
	name  string
	p     *pool.Pool
	cfg   Config[V]
	codec Codec[V]
	local *local[V]    // nil with Config.NoLocal
	clock func() int64 // the local tier's clock (see newClock)
	log   *slog.Logger

	id         uint64 // this instance, so it can ignore its own messages
	keyPrefix  string // {c:<name>}:k:
	lockPrefix string // {c:<name>}:l:
	channel    string // {c:<name>}:inval

	scripts scripts
	flights singleflight.Group
	loads   loadTracker

	waitMu  sync.Mutex
	waiters map[string]*waiter // flights waiting for another instance's load, by key

	startMu    sync.Mutex
	started    bool
	group      *lifecycle.Group // the group Start succeeded on
	subscribed atomic.Bool

	st counters
}

// New builds a cache named name on p. The name becomes the hash tag of every
// key the cache writes ({c:<name>}:k:<key>), so instances in other processes
// that use the same name share the Redis tier, the load lock and the
// invalidations. New does not touch Redis; it fails only on bad input.
func New[V any](p *pool.Pool, name string, cfg Config[V]) (*Cache[V], error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	if err := check.Name("name", name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	clock := newClock(cfg.Now) // before the default fills Now in
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tag := "{c:" + name + "}:"
	c := &Cache[V]{
		name:       name,
		p:          p,
		cfg:        cfg,
		codec:      cfg.Codec,
		clock:      clock,
		log:        cfg.Logger.With("cache", name),
		id:         rand.Uint64(),
		keyPrefix:  tag + "k:",
		lockPrefix: tag + "l:",
		channel:    tag + "inval",
		waiters:    make(map[string]*waiter),
		scripts:    newScripts(),
	}
	c.loads.init(cfg.MaxLoads)
	if !cfg.NoLocal {
		c.local = newLocal[V](cfg.MaxEntries, cfg.MaxBytes, cfg.MaxValueBytes, clock)
	}
	return c, nil
}

// Name returns the cache's name.
func (c *Cache[V]) Name() string { return c.name }

// Channel returns the Pub/Sub channel of the cache's invalidations.
func (c *Cache[V]) Channel() string { return c.channel }

// RedisKey returns the Redis key that holds key's value.
func (c *Cache[V]) RedisKey(key string) string { return c.keyPrefix + key }

func (c *Cache[V]) lockKey(key string) string { return c.lockPrefix + key }

// checkOpen fails with ErrClosed once the group the cache was started on
// has closed.
func (c *Cache[V]) checkOpen(op string) error {
	if c.loads.isClosed() {
		return fmt.Errorf("cache %q: %s: %w", c.name, op, ErrClosed)
	}
	return nil
}

func (c *Cache[V]) checkKey(op, key string) error {
	if err := c.checkOpen(op); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("%w: cache %q: %s: empty key", ErrInvalid, c.name, op)
	}
	if len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: cache %q: %s: key of %d bytes, over MaxKeyBytes (%d); hash long keys before using them", ErrInvalid, c.name, op, len(key), MaxKeyBytes)
	}
	return nil
}

// Get returns key's value: from the local tier if it holds it, else from
// Redis (and then keeps it locally). A key in neither tier, or cached as not
// found, returns ErrNotFound. While Redis is down a local hit still serves
// and a miss fails at once with an error matching pool.ErrUnavailable. A
// value in Redis the codec cannot decode returns ErrCodec and is deleted,
// so the next read misses.
func (c *Cache[V]) Get(ctx context.Context, key string) (V, error) {
	var zero V
	if err := c.checkKey("Get", key); err != nil {
		return zero, err
	}
	if v, notFound, ok := c.getLocal(key); ok {
		if notFound {
			return zero, ErrNotFound
		}
		return v, nil
	}
	v, _, err := c.getRedis(ctx, key)
	return v, err
}

func (c *Cache[V]) getLocal(key string) (v V, notFound, ok bool) {
	if c.local == nil {
		return v, false, false
	}
	return c.local.get(key)
}

// getRedis reads key from Redis and keeps what it finds in the local tier.
// found is false on a miss (err is then ErrNotFound).
func (c *Cache[V]) getRedis(ctx context.Context, key string) (v V, found bool, err error) {
	var gen uint64
	if c.local != nil {
		gen = c.local.gen(key) // before the read: see local.fill
	}
	start := c.clock()
	data, pttl, err := c.read(ctx, key)
	if err != nil {
		if errors.Is(err, redis.Nil) {
			c.st.misses.Add(1)
			return v, false, ErrNotFound
		}
		if ctx.Err() == nil { // else the caller or Close ended it: nothing wrong with Redis
			c.st.redisErrors.Add(1)
		}
		return v, false, fmt.Errorf("cache %q: get %q: %w", c.name, key, err)
	}
	v, notFound, err := c.decode(key, data)
	if err != nil {
		c.dropUndecodable(ctx, key, data)
		return v, false, err
	}
	c.st.redisHits.Add(1)
	if c.local != nil {
		c.local.fill(key, v, notFound, len(data), c.localExpiry(start, pttl), gen)
	}
	if notFound {
		return v, true, ErrNotFound
	}
	return v, true, nil
}

// dropUndecodable deletes key's value if Redis still holds data, which the
// codec could not decode (written with another V, by a newer version of
// this package, or by something else), so that the next read misses and a
// GetOrLoad replaces it instead of failing until it expires. A value written
// since is left alone. It counts in Stats.DecodeErrors.
func (c *Cache[V]) dropUndecodable(ctx context.Context, key string, data []byte) {
	c.st.decodeErrors.Add(1)
	err := c.scripts.dropIf.Run(ctx, c.p.Client(), []string{c.RedisKey(key)}, data).Err()
	if err != nil {
		c.log.Warn("cache: could not delete an undecodable value", "key", key, "err", err)
		return
	}
	c.log.Warn("cache: deleted a value the codec could not decode", "key", key, "bytes", len(data))
}

// read fetches key's value and remaining TTL in one round trip. A missing
// key returns redis.Nil. Without a local tier the TTL is not needed (it only
// bounds a local copy), so a read is one GET.
func (c *Cache[V]) read(ctx context.Context, key string) ([]byte, time.Duration, error) {
	rk := c.RedisKey(key)
	if c.local == nil {
		data, err := c.p.Client().Get(ctx, rk).Bytes()
		return data, -1, err
	}
	pipe := c.p.Client().Pipeline()
	get := pipe.Get(ctx, rk)
	pttl := pipe.PTTL(ctx, rk)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, err
	}
	data, err := get.Bytes()
	if err != nil {
		return nil, 0, err
	}
	return data, pttl.Val(), nil
}

// localExpiry is when a local copy of a value read at start with Redis TTL
// pttl must be gone: never after Redis's copy (start precedes the read, so
// start+pttl is no later than the key's expiry), never later than LocalTTL.
func (c *Cache[V]) localExpiry(start int64, pttl time.Duration) int64 {
	d := c.cfg.LocalTTL
	switch {
	case pttl == -2: // gone between GET and PTTL
		d = 0
	case pttl >= 0:
		d = min(d, pttl)
	}
	// A LocalTTL near the largest Duration means "as long as Redis keeps
	// it": saturate rather than wrap into the past. (start can be negative,
	// with a Config.Now that went back before New: no overflow then.)
	if start > 0 && int64(d) > math.MaxInt64-start {
		return math.MaxInt64
	}
	return start + int64(d)
}

// Set writes v under key with ttl in Redis and in the local tier, and tells
// the other instances to drop their local copies. ttl is rounded up to a
// whole millisecond (and shortened by Config.TTLJitter); it must be
// positive. A value the codec cannot encode, or one over
// Config.MaxValueBytes, fails and writes nothing. If the write fails the
// local copy is dropped too.
func (c *Cache[V]) Set(ctx context.Context, key string, v V, ttl time.Duration) error {
	if err := c.checkKey("Set", key); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("%w: cache %q: Set %q: ttl must be positive, got %s", ErrInvalid, c.name, key, ttl)
	}
	data, err := c.encode(key, v)
	if err != nil {
		return err
	}
	var gen uint64
	if c.local != nil {
		gen = c.local.gen(key) // before the write: see local.store
	}
	return c.write(ctx, key, v, false, data, ttl, false, "", gen)
}

// write stores data under key in Redis with the invalidation in the same
// round trip, then v in the local tier. gen is the local generation taken
// before the value was read or computed.
//
// A Set (fill false) overwrites, and deletes the key's load lock so that a
// load in progress, which may have read the data before the change the Set
// is about, does not write over it. A loaded value (fill true) is written
// only if it is still wanted: with the lock token, only if the lock is still
// ours (no Set or Delete came meanwhile, the lock did not expire), in the
// script that also releases it; without, only if the key is still missing.
// A value not written is not kept locally either; the caller still gets it.
func (c *Cache[V]) write(ctx context.Context, key string, v V, notFound bool, data []byte, ttl time.Duration, fill bool, token string, gen uint64) error {
	ttl = c.redisTTL(ttl)
	start := c.clock()
	var sent int
	var err error
	wrote := true
	if token != "" {
		sent, wrote, err = c.writeLocked(ctx, key, data, ttl, token)
	} else {
		pipe := c.p.Client().Pipeline()
		var nx *redis.BoolCmd
		if fill {
			nx = pipe.SetNX(ctx, c.RedisKey(key), data, ttl)
		} else {
			// The lock goes first. A pipeline is not atomic: another
			// instance's fill can run between two of its commands, and
			// one that ran after the SET but before the DEL would still
			// find its lock and write its (older) value over the Set's.
			// After the DEL no fill of a load already running writes, so
			// the SET is not overwritten by one. Between the two a waiting
			// instance may find neither lock nor value and start a load of
			// its own; its loader runs after the Set began (so, with the
			// source updated before the Set, it reads the new data), and
			// its fill, if it comes after the SET, writes that.
			if !c.cfg.NoLock {
				pipe.Del(ctx, c.lockKey(key))
			}
			pipe.Set(ctx, c.RedisKey(key), data, ttl)
		}
		op := byte(opKeys)
		if fill {
			op = opLoaded
		}
		sent = c.publish(ctx, pipe, op, key)
		_, err = pipe.Exec(ctx)
		if nx != nil {
			wrote = nx.Val()
		}
		if !fill {
			// A GetOrLoad from now on must not join a load that may have
			// read the data before this Set: it starts its own.
			c.flights.Forget(key)
		}
	}
	if err != nil {
		c.st.redisErrors.Add(1)
		if !fill {
			// What Redis holds now is unknown. (A load decides what to
			// keep itself, by the generation it took before its loader
			// ran: dropping here would make every load look invalidated.)
			c.dropLocal(key)
		}
		return fmt.Errorf("cache %q: set %q: %w", c.name, key, err)
	}
	c.st.invalSent.Add(uint64(sent))
	if !wrote {
		c.log.Debug("cache: a Set or Delete came while loading; the loaded value is not cached", "key", key)
		return nil
	}
	if c.local != nil {
		c.local.store(key, v, notFound, len(data), c.localExpiry(start, ttl), gen)
	}
	return nil
}

// redisTTL applies the jitter and rounds up to a whole millisecond, the
// unit of PX: a TTL under a second stays what it was asked to be.
func (c *Cache[V]) redisTTL(ttl time.Duration) time.Duration {
	if j := c.cfg.TTLJitter; j > 0 {
		ttl -= time.Duration(rand.Float64() * j * float64(ttl))
	}
	// Whole milliseconds, rounded up, without overflowing for a TTL near
	// the largest Duration (a common way to say "forever").
	ms := ttl / time.Millisecond
	if ttl%time.Millisecond != 0 && ms < time.Duration(math.MaxInt64)/time.Millisecond {
		ms++
	}
	return max(ms, 1) * time.Millisecond
}

func (c *Cache[V]) dropLocal(key string) {
	if c.local != nil {
		c.local.drop(key)
	}
}

// Delete removes keys from Redis and from the local tier, and tells the
// other instances to drop their local copies. Keys that do not exist are not
// an error. The local copies are dropped even if Redis fails.
func (c *Cache[V]) Delete(ctx context.Context, keys ...string) error {
	if err := c.checkOpen("Delete"); err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	rks := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		if err := c.checkKey("Delete", k); err != nil {
			return err
		}
		rks = append(rks, c.RedisKey(k))
		if !c.cfg.NoLock {
			// A load in progress may have read what this Delete is
			// about: without its lock it will not write it (see write).
			rks = append(rks, c.lockKey(k))
		}
	}
	pipe := c.p.Client().Pipeline()
	pipe.Del(ctx, rks...)
	sent := c.publish(ctx, pipe, opKeys, keys...)
	_, err := pipe.Exec(ctx)
	// Dropped after Redis, so a read that raced the delete cannot put the
	// old value back (see local.fill). A GetOrLoad from now on starts its
	// own load rather than join one that may have read the old data.
	for _, k := range keys {
		c.dropLocal(k)
		c.flights.Forget(k)
	}
	if err != nil {
		c.st.redisErrors.Add(1)
		return fmt.Errorf("cache %q: delete %d key(s): %w", c.name, len(keys), err)
	}
	c.st.invalSent.Add(uint64(sent))
	return nil
}
