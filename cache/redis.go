package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis tier: reads, the three ways a value is written (a Set
// overwrites; a load fills only while its lock holds or, with
// Config.NoLock, only a missing key), and deletes. Every write publishes
// its invalidation in the same round trip.

// getRedis reads key from Redis and keeps what it finds in the local tier.
// found is false on a miss (err is then ErrNotFound).
func (c *Cache[V]) getRedis(ctx context.Context, key string) (v V, found bool, err error) {
	v, found, _, err = c.readRedis(ctx, key)
	return v, found, err
}

// readRedis is getRedis that also reports whether the value found is due
// for a refresh (Config.RefreshAfter).
func (c *Cache[V]) readRedis(ctx context.Context, key string) (v V, found, stale bool, err error) {
	gen := c.localGen(key) // before the read: see local.fill
	start := c.clock()
	data, pttl, err := c.read(ctx, key)
	if err != nil {
		if errors.Is(err, redis.Nil) {
			c.st.misses.Add(1)
			return v, false, false, ErrNotFound
		}
		if ctx.Err() == nil { // else the caller or Close ended it: nothing wrong with Redis
			c.st.redisErrors.Add(1)
		}
		return v, false, false, fmt.Errorf("cache %q: get %q: %w", c.name, key, err)
	}
	e, err := c.decode(key, data)
	if err != nil {
		c.dropUndecodable(ctx, key, data)
		return e.v, false, false, err
	}
	c.st.redisHits.Add(1)
	c.fillLocal(key, e, start, pttl, gen)
	if e.notFound {
		return e.v, true, false, ErrNotFound
	}
	return e.v, true, isStale(e, pttl), nil
}

// read fetches key's value and remaining TTL in one round trip. A missing
// key returns redis.Nil. Without a local tier and refresh-ahead the TTL is
// not needed (it only bounds a local copy and dates the value), so a read is
// one GET.
func (c *Cache[V]) read(ctx context.Context, key string) ([]byte, time.Duration, error) {
	rk := c.RedisKey(key)
	if c.local == nil && c.cfg.RefreshAfter == 0 {
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

// setRedis is a Set's write: it overwrites key's value and deletes the
// key's load lock, so that a load in progress, which may have read the data
// before the change the Set is about, does not write over it (see
// fillLocked). If it fails, what Redis holds is unknown and the local copy
// is dropped.
func (c *Cache[V]) setRedis(ctx context.Context, key string, data []byte, ttl time.Duration) error {
	pipe := c.p.Client().Pipeline()
	// The lock goes first. A pipeline is not atomic: another instance's
	// fill can run between two of its commands, and one that ran after the
	// SET but before the DEL would still find its lock and write its
	// (older) value over the Set's. After the DEL no fill of a load already
	// running writes, so the SET is not overwritten by one. Between the two
	// a waiting instance may find neither lock nor value and start a load
	// of its own; its loader runs after the Set began (so, with the source
	// updated before the Set, it reads the new data), and its fill, if it
	// comes after the SET, writes that.
	if !c.cfg.NoLock {
		pipe.Del(ctx, c.lockKey(key))
	}
	pipe.Set(ctx, c.RedisKey(key), data, ttl)
	sent := c.publish(ctx, pipe, opKeys, key)
	_, err := pipe.Exec(ctx)
	// A GetOrLoad from now on must not join a load that may have read the
	// data before this Set: it starts its own.
	c.flights.Forget(key)
	if err != nil {
		c.st.redisErrors.Add(1)
		// (A load decides what to keep itself, by the generation it took
		// before its loader ran: dropping there would make every load look
		// invalidated.)
		c.dropLocal(key)
		return fmt.Errorf("cache %q: set %q: %w", c.name, key, err)
	}
	c.st.invalSent.Add(uint64(sent))
	return nil
}

// deleteRedis deletes keys' values and, so that a load in progress does not
// write back what the Delete is about, their load locks (see fillLocked).
func (c *Cache[V]) deleteRedis(ctx context.Context, keys []string) error {
	rks := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		rks = append(rks, c.RedisKey(k))
		if !c.cfg.NoLock {
			rks = append(rks, c.lockKey(k))
		}
	}
	pipe := c.p.Client().Pipeline()
	pipe.Del(ctx, rks...)
	sent := c.publish(ctx, pipe, opKeys, keys...)
	if _, err := pipe.Exec(ctx); err != nil {
		c.st.redisErrors.Add(1)
		return fmt.Errorf("cache %q: delete %d key(s): %w", c.name, len(keys), err)
	}
	c.st.invalSent.Add(uint64(sent))
	return nil
}

// fillIfMissing writes a value loaded without the lock (Config.NoLock) only
// if the key is still missing (SET NX): a Set made while the loader ran
// wins, a Delete does not. It reports whether it wrote.
func (c *Cache[V]) fillIfMissing(ctx context.Context, key string, data []byte, ttl time.Duration) (wrote bool, err error) {
	pipe := c.p.Client().Pipeline()
	nx := pipe.SetNX(ctx, c.RedisKey(key), data, ttl)
	sent := c.publish(ctx, pipe, opLoaded, key)
	if _, err := pipe.Exec(ctx); err != nil {
		return false, err
	}
	c.st.invalSent.Add(uint64(sent))
	return nx.Val(), nil
}

// fillLocked runs the fill script: it writes data (nil: none, the load
// failed) and releases key's load lock, if token still holds it (no Set or
// Delete came since it was taken, it did not expire), and publishes the
// note that wakes the waiters and drops other instances' copies. It reports
// whether it wrote the value.
func (c *Cache[V]) fillLocked(ctx context.Context, key string, data []byte, ttl time.Duration, token string) (wrote bool, err error) {
	msg, sent := "", 0
	if !c.cfg.NoInvalidation {
		msg, sent = keyMessages(c.id, opLoaded, []string{key})[0], 1
	}
	keys := []string{c.RedisKey(key), c.lockKey(key)}
	n, err := c.scripts.fill.Run(ctx, c.p.Client(), keys, data, ttl.Milliseconds(), token, c.channel, msg).Int64()
	if err != nil {
		return false, err
	}
	c.st.invalSent.Add(uint64(sent))
	return n == 1, nil
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

// pttlDuration turns a PTTL reply into what go-redis's PTTL returns: a
// duration, or -1 (no expiry) and -2 (no key) as they are.
func pttlDuration(ms int64) time.Duration {
	if ms < 0 {
		return time.Duration(ms)
	}
	return time.Duration(ms) * time.Millisecond
}
