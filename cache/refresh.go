package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/lifecycle"
)

// Refresh-ahead (Config.RefreshAfter).
//
// The age of a value is read on Redis's clock, so that instances whose
// clocks disagree still agree on when a value is due: a value written with
// RefreshAfter carries, after its kind byte, its refresh stamp (8 bytes,
// big endian): the Redis TTL, in milliseconds, below which it is due. It is
// written as ttl - ttl*RefreshAfter/TTL, ttl being the TTL the value was
// written with (after jitter), so a value's refresh point scales with its
// own TTL (a loader's TTL from GetOrLoadTTL, a Set's) and is exactly
// RefreshAfter for one written with Config.TTL. Every read already gets the
// value's PTTL with it, so dating a value costs nothing; the refresh script
// reads the stamp too, to skip a value another instance refreshed
// meanwhile. The local tier dates its copy on its own clock: a copy read at
// start with PTTL p is due at start + p - stamp.
//
// A GetOrLoad that finds a due value (a local hit, or a read from Redis)
// returns it and hands a refresh to the cache's refreshers: MaxRefreshes
// lifecycle tasks that Start runs on the cache's group, fed by a channel of
// MaxRefreshes requests. A request that finds no room is dropped (counted
// in Stats.RefreshesSkipped). Within an instance the local copy's refresh
// time is moved on by the retry interval by the read that claims it, so one
// read per interval asks; across instances the load lock makes it one
// refresh in all.

// stampedHeader is the kind byte and the refresh stamp.
const stampedHeader = 1 + 8

// neverRefresh is the refresh time of a local copy that is never due.
const neverRefresh = math.MaxInt64

// errRefreshStopped cancels a refresh whose task the group stopped.
var errRefreshStopped = fmt.Errorf("%w: the cache's group is closing", ErrClosed)

// headerLen is the length of the header before the codec's bytes.
func headerLen(kind byte) int {
	if kind == kindStamped {
		return stampedHeader
	}
	return 1
}

// readStamp reads the refresh stamp of a kindStamped value.
func readStamp(data []byte) (time.Duration, bool) {
	if len(data) < stampedHeader {
		return 0, false
	}
	ms := binary.BigEndian.Uint64(data[1:stampedHeader])
	if ms > uint64(math.MaxInt64/int64(time.Millisecond)) {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// stamp writes e's refresh stamp for a value written with Redis TTL ttl (a
// whole number of milliseconds). Values without the stamp's room (negative
// entries, or RefreshAfter off) are left alone.
func (c *Cache[V]) stamp(e *encoded[V], ttl time.Duration) {
	if len(e.data) < stampedHeader || e.data[0] != kindStamped {
		return
	}
	ms := uint64(max(ttl.Milliseconds(), 0))
	// after = ms*RefreshAfter/TTL, rounded up (a value written with
	// Config.TTL is due after RefreshAfter, not before), in 128 bits: the
	// product overflows 64 for long TTLs, the quotient never does
	// (RefreshAfter < TTL, so hi < TTL).
	hi, lo := bits.Mul64(ms, uint64(c.cfg.RefreshAfter))
	after, rem := bits.Div64(hi, lo, uint64(c.cfg.TTL))
	if rem != 0 {
		after++
	}
	below := ms - min(after, ms)
	binary.BigEndian.PutUint64(e.data[1:stampedHeader], uint64(below))
	e.staleBelow = time.Duration(below) * time.Millisecond
}

// isStale reports whether a value read with Redis TTL pttl is due.
func isStale[V any](e encoded[V], pttl time.Duration) bool {
	return e.staleBelow > 0 && pttl >= 0 && pttl <= e.staleBelow
}

// due is when a local copy is due for a refresh (at, on the tier's clock),
// and how long a read that claims its refresh holds the claim (retry).
type due struct{ at, retry int64 }

// never is the due of a copy that is never refreshed.
var never = due{at: neverRefresh}

// refreshDue is when a local copy of e, read (or written) at start with
// Redis TTL pttl, is due (never for a value without a stamp), and its
// retry interval: the cache's, or a quarter of the value's own refresh
// window (its stamp) if that is shorter, so that a value with a short
// per-call TTL is still tried several times before it expires.
func (c *Cache[V]) refreshDue(start int64, pttl time.Duration, e encoded[V]) due {
	if e.staleBelow <= 0 || pttl < 0 {
		return never
	}
	retry := max(min(c.refresh.retry, int64(e.staleBelow/4)), int64(time.Millisecond))
	d := int64(pttl - e.staleBelow)
	if start > 0 && d > math.MaxInt64-start {
		return due{at: neverRefresh, retry: retry}
	}
	return due{at: start + d, retry: retry}
}

// ttlLoader is the loader every GetOrLoad variant comes down to: a value
// and its TTL (zero: Config.TTL).
type ttlLoader[V any] func(ctx context.Context) (V, time.Duration, error)

// refresher is a cache's refresh-ahead state.
type refresher[V any] struct {
	retry int64 // nanoseconds between two claims of one local copy
	queue chan refreshJob[V]
	lock  *redis.Script
}

// refreshJob is one key to refresh.
type refreshJob[V any] struct {
	ctx  context.Context // the values of the caller that found it due
	key  string
	load ttlLoader[V]
}

func (r *refresher[V]) init(cfg Config[V]) {
	if cfg.RefreshAfter <= 0 {
		return
	}
	// A read retries a refresh that failed (or found no room, or found
	// another instance refreshing, whose note was lost) a quarter of the
	// shorter of the two windows later: several tries before the value
	// expires, and at most four per RefreshAfter per instance. A value
	// whose own window is shorter (a short per-call TTL) is retried a
	// quarter of its window later (see refreshDue).
	r.retry = int64(max(min(cfg.RefreshAfter, cfg.TTL-cfg.RefreshAfter)/4, time.Millisecond))
	r.queue = make(chan refreshJob[V], cfg.MaxRefreshes)
	r.lock = redis.NewScript(refreshScript)
}

// Results of refreshScript.
const (
	refreshNotDue = 0 // the value is fresh (refreshed meanwhile) or gone
	refreshHeld   = 1 // another instance holds the load lock
	refreshLocked = 2 // this instance holds it now
)

// refreshScript takes the load lock of a value that is still due: one
// written by this package with a stamp, whose TTL is down to its stamp.
// A value refreshed meanwhile, or one that is gone (a Delete, an expiry:
// the next GetOrLoad loads it), is left alone.
//
// KEYS[1] value, KEYS[2] lock; ARGV[1] token, ARGV[2] lock ttl in ms.
const refreshScript = `
local v = redis.call('GET', KEYS[1])
if not v or #v < 9 or string.byte(v, 1) ~= 3 then
	return 0
end
local below = 0
for i = 2, 9 do
	below = below * 256 + string.byte(v, i)
end
local p = redis.call('PTTL', KEYS[1])
if p < 0 or p > below then
	return 0
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return 2
end
return 1
`

// startRefreshers registers the refreshers with g (Start).
func (c *Cache[V]) startRefreshers(g *lifecycle.Group) error {
	if c.cfg.RefreshAfter <= 0 {
		return nil
	}
	for range c.cfg.MaxRefreshes {
		if err := g.Go("cache:"+c.name+" refresh", c.refreshWorker); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cache[V]) refreshWorker(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-c.refresh.queue:
			c.runRefresh(ctx, j)
		}
	}
}

// fromLocalClaim is fromLocal for GetOrLoad: refresh reports that the copy
// is due and this call claimed its refresh.
func (c *Cache[V]) fromLocalClaim(key string) (v V, hit, refresh bool, err error) {
	if c.refresh.queue == nil {
		// Refresh-ahead off here (a stamped value written by an instance
		// that has it on is served as any other).
		v, hit, err = c.fromLocal(key)
		return v, hit, false, err
	}
	if c.local == nil {
		return v, false, false, nil
	}
	v, notFound, hit, refresh := c.local.getOrClaim(key)
	if hit && notFound {
		return v, true, false, ErrNotFound
	}
	return v, hit, refresh, nil
}

// refreshFound asks for a refresh of a due value a flight read from Redis,
// unless another read claimed the local copy it just filled.
func (c *Cache[V]) refreshFound(ctx context.Context, key string, load ttlLoader[V]) {
	if c.local != nil {
		if present, claimed := c.local.claim(key); present && !claimed {
			return
		}
	}
	c.requestRefresh(ctx, key, load)
}

// requestRefresh hands key's refresh to a refresher, or drops it when there
// is no room (or the cache was not started: nothing would run it).
func (c *Cache[V]) requestRefresh(ctx context.Context, key string, load ttlLoader[V]) {
	if c.refresh.queue == nil {
		return
	}
	if !c.startedAny() {
		c.st.refreshesSkipped.Add(1)
		return
	}
	select {
	case c.refresh.queue <- refreshJob[V]{ctx: context.WithoutCancel(ctx), key: key, load: load}:
	default:
		c.st.refreshesSkipped.Add(1)
	}
}

// startedAny reports whether Start succeeded.
func (c *Cache[V]) startedAny() bool {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	return c.started
}

// runRefresh refreshes one key, as a flight would load it: it counts in
// Stats.LoadsInFlight, needs one of MaxLoads slots, takes the load lock
// (only while the value is still due) and writes through the fill script,
// so a Set or Delete made meanwhile wins. It ends when its task's group
// closes, and within LockTTL+LoadTimeout (plus the write) in any case.
func (c *Cache[V]) runRefresh(taskCtx context.Context, j refreshJob[V]) {
	fctx, cancel, ok := c.loads.begin(j.ctx, c.cfg.LockTTL+c.cfg.LoadTimeout)
	if !ok {
		return
	}
	defer c.loads.end()
	defer cancel()
	ctx, cancelCause := context.WithCancelCause(fctx)
	defer cancelCause(nil)
	stop := context.AfterFunc(taskCtx, func() { cancelCause(errRefreshStopped) })
	defer stop()
	if !c.loads.startLoad() {
		c.st.refreshesSkipped.Add(1)
		return
	}
	defer c.loads.endLoad()

	gen := c.localGen(j.key)
	token := c.lockToken()
	keys := []string{c.RedisKey(j.key), c.lockKey(j.key)}
	r, err := c.refresh.lock.Run(ctx, c.p.Client(), keys, token, c.cfg.LockTTL.Milliseconds()).Int64()
	if err != nil {
		c.releaseUnknown(ctx, j.key, token, err)
		if ctx.Err() == nil {
			c.st.redisErrors.Add(1)
			c.st.refreshErrs.Add(1)
			c.log.Warn("cache: refresh could not ask Redis; the old value serves until its TTL", "key", j.key, "err", err)
		}
		return
	}
	switch r {
	case refreshNotDue:
		// Refreshed by another instance, whose note may not have reached
		// this one: take the new value (a miss or an error changes
		// nothing here).
		_, _, _ = c.getRedis(ctx, j.key)
		return
	case refreshHeld:
		return
	}
	c.st.refreshes.Add(1)
	k := keepLocked(token)
	var writeFailed bool
	k.writeFailed = &writeFailed
	_, err = c.load(ctx, j.key, j.load, k, gen)
	if err == nil && writeFailed {
		// The fleet still has the old value, due: a failed refresh.
		c.st.refreshErrs.Add(1)
		return
	}
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
		c.st.refreshErrs.Add(1)
		c.log.Warn("cache: refresh failed; the old value serves until its TTL", "key", j.key, "err", err)
	}
}

// lockToken returns a new load lock token of this instance.
func (c *Cache[V]) lockToken() string {
	return strconv.FormatUint(c.id, 36) + ":" + strconv.FormatUint(c.st.lockTokens.Add(1), 36)
}

// getOrClaim is get for GetOrLoad: when the entry is due for a refresh it
// also claims the refresh (claimed) by moving the entry's refresh time on
// by its retry interval, so that one read per interval claims it.
func (l *local[V]) getOrClaim(key string) (v V, notFound, ok, claimed bool) {
	s := l.shardOf(key)
	now := l.clock()
	s.mu.RLock()
	e := s.m[key]
	if e == nil {
		s.mu.RUnlock()
		return v, false, false, false
	}
	if now >= e.expires {
		s.mu.RUnlock()
		s.expire(key, e)
		return v, false, false, false
	}
	v, notFound = e.val, e.notFound
	if e.freq.Load() < maxFreq {
		e.freq.Add(1)
	}
	if r := e.refreshAt.Load(); now >= r {
		claimed = e.refreshAt.CompareAndSwap(r, satAdd(now, e.retry))
	}
	s.mu.RUnlock()
	s.hits.Add(1)
	return v, notFound, true, claimed
}

// claim claims the refresh of key's entry, if it is there and due.
func (l *local[V]) claim(key string) (present, claimed bool) {
	s := l.shardOf(key)
	now := l.clock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.m[key]
	if e == nil || now >= e.expires {
		return false, false
	}
	if r := e.refreshAt.Load(); now >= r {
		return true, e.refreshAt.CompareAndSwap(r, satAdd(now, e.retry))
	}
	return true, false
}

func satAdd(a, b int64) int64 {
	if a > 0 && b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}
