package cache

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

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
	tags    tagKeys      // tag sets and their scripts (tags.go)
	track   tracking     // Config.TrackRawWrites (tracking.go)
	refresh refresher[V] // Config.RefreshAfter's background refreshes (refresh.go)
	bulk    bulkScripts  // bulk.go
	flights singleflight.Group
	loads   loadTracker

	waitMu  sync.Mutex
	waiters map[string]*waiter // flights waiting for another instance's load, by key

	startMu    sync.Mutex
	started    bool
	group      *lifecycle.Group // the group Start succeeded on
	subscribed atomic.Bool

	st counters

	testHookTagDrain func() // InvalidateTag, between moving the tag's members and deleting them
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
		tags:       newTagKeys(tag),
		bulk:       newBulkScripts(),
	}
	c.loads.init(cfg.MaxLoads)
	c.refresh.init(cfg)
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
	if err := c.checkKey("Get", key); err != nil {
		var zero V
		return zero, err
	}
	if v, hit, err := c.fromLocal(key); hit {
		return v, err
	}
	v, _, err := c.getRedis(ctx, key)
	return v, err
}

// Set writes v under key with ttl in Redis and in the local tier, and tells
// the other instances to drop their local copies. ttl is rounded up to a
// whole millisecond (and shortened by Config.TTLJitter); it must be
// positive. A value the codec cannot encode, or one over
// Config.MaxValueBytes, fails and writes nothing. If the write fails the
// local copy is dropped too. Tags(...) tags the value for InvalidateTag; the
// value and its tags are written in one atomic step.
func (c *Cache[V]) Set(ctx context.Context, key string, v V, ttl time.Duration, opts ...Option) error {
	if err := c.checkKey("Set", key); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("%w: cache %q: Set %q: ttl must be positive, got %s", ErrInvalid, c.name, key, ttl)
	}
	o, err := c.callOptions("Set", key, opts)
	if err != nil {
		return err
	}
	e, err := c.encode(key, v)
	if err != nil {
		return err
	}
	gen := c.localGen(key) // before the write: see local.store
	ttl = c.redisTTL(ttl)
	c.stamp(&e, ttl)
	start := c.clock()
	if err := c.setRedisWith(ctx, key, e.data, ttl, o.tags); err != nil {
		return err
	}
	c.storeLocal(key, e, start, ttl, gen)
	return nil
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
	for _, k := range keys {
		if err := c.checkKey("Delete", k); err != nil {
			return err
		}
	}
	err := c.deleteRedis(ctx, keys)
	// Dropped after Redis, so a read that raced the delete cannot put the
	// old value back (see local.fill). A GetOrLoad from now on starts its
	// own load rather than join one that may have read the old data.
	for _, k := range keys {
		c.dropLocal(k)
		c.flights.Forget(k)
	}
	return err
}

// The local tier's side of the cache. With Config.NoLocal c.local is nil
// and these do nothing: every read goes to Redis.

// fromLocal answers key from the local tier. hit is false on a miss; a
// negative-cache entry is a hit with ErrNotFound.
func (c *Cache[V]) fromLocal(key string) (v V, hit bool, err error) {
	if c.local == nil {
		return v, false, nil
	}
	v, notFound, hit := c.local.get(key)
	if hit && notFound {
		return v, true, ErrNotFound
	}
	return v, hit, nil
}

// localGen returns key's local generation, taken before a read from Redis
// or a load so that fillLocal and storeLocal can tell whether the key was
// written or invalidated meanwhile.
func (c *Cache[V]) localGen(key string) uint64 {
	if c.local == nil {
		return 0
	}
	return c.local.gen(key)
}

// fillLocal keeps a value read from Redis at start with Redis TTL pttl
// (see local.fill).
func (c *Cache[V]) fillLocal(key string, e encoded[V], start int64, pttl time.Duration, gen uint64) {
	if c.local != nil {
		c.local.fill(key, e.v, e.notFound, len(e.data), c.localExpiry(start, pttl), c.refreshDue(start, pttl, e), gen)
	}
}

// storeLocal keeps a value this process wrote at start with TTL ttl, or
// could not write, to Redis (see local.store).
func (c *Cache[V]) storeLocal(key string, e encoded[V], start int64, ttl time.Duration, gen uint64) {
	if c.local != nil {
		c.local.store(key, e.v, e.notFound, len(e.data), c.localExpiry(start, ttl), c.refreshDue(start, ttl, e), gen)
	}
}

func (c *Cache[V]) dropLocal(key string) {
	if c.local != nil {
		c.local.drop(key)
	}
}

// flushLocal drops the whole local tier and wakes every flight waiting for
// another instance's load: notes may have been lost too.
func (c *Cache[V]) flushLocal() {
	if c.local != nil {
		c.local.flush()
	}
	c.st.flushes.Add(1)
	c.wakeAll()
}
