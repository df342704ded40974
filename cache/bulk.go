package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxBulkKeys is the most keys GetMany, GetOrLoadMany and SetMany take in
// one call; more fail with ErrInvalid and nothing is read or written. It
// bounds one call's Redis round trip and reply, and the script that locks
// or fills the keys, which holds Redis for its whole run.
const MaxBulkKeys = 1000

// The bulk calls. All keys of one cache share its hash tag, so they live in
// one Redis Cluster slot: one MGET, one script over every key, one
// pipeline, on a cluster as on a single server (TestCluster/Bulk).

// checkKeys checks a bulk call's keys and returns them without duplicates,
// in their first order.
func (c *Cache[V]) checkKeys(op string, keys []string) ([]string, error) {
	if err := c.checkOpen(op); err != nil {
		return nil, err
	}
	if len(keys) > MaxBulkKeys {
		return nil, fmt.Errorf("%w: cache %q: %s: %d keys, over MaxBulkKeys (%d); split the call", ErrInvalid, c.name, op, len(keys), MaxBulkKeys)
	}
	seen := make(map[string]struct{}, len(keys))
	uniq := make([]string, 0, len(keys))
	for _, k := range keys {
		if err := c.checkKey(op, k); err != nil {
			return nil, err
		}
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			uniq = append(uniq, k)
		}
	}
	return uniq, nil
}

// GetMany returns the values of keys that either tier holds: from the local
// tier first, then the rest in one Redis round trip (one MGET, with their
// TTLs, pipelined). Keys in neither tier, cached as not found, or holding a
// value the codec cannot decode (deleted, as Get does) are left out of the
// map; a key may be listed twice. On a Redis error the map holds the local
// hits and the error is returned with it. At most MaxBulkKeys keys; none is
// an empty map. GetMany loads nothing and refreshes nothing.
func (c *Cache[V]) GetMany(ctx context.Context, keys []string) (map[string]V, error) {
	uniq, err := c.checkKeys("GetMany", keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]V, len(uniq))
	missing := c.localMany(ctx, uniq, out, nil)
	if len(missing) == 0 {
		return out, nil
	}
	_, err = c.readMany(ctx, missing, out, nil)
	return out, err
}

// localMany puts the local tier's answers for keys into out and returns the
// keys it does not hold. With load (GetOrLoadMany) it asks for the refresh
// of the values that are due.
func (c *Cache[V]) localMany(ctx context.Context, keys []string, out map[string]V, load func(ctx context.Context, missing []string) (map[string]V, error)) []string {
	if c.local == nil {
		return keys
	}
	missing := keys[:0:0]
	for _, k := range keys {
		v, hit, refresh, err := c.fromLocalClaim(k)
		switch {
		case !hit:
			missing = append(missing, k)
		case err == nil:
			out[k] = v
			if refresh && load != nil {
				c.requestRefresh(ctx, k, loaderOf(oneOf(k, load), nil))
			}
		}
	}
	return missing
}

// readMany reads keys from Redis in one round trip, keeps what it finds
// locally and puts it in out; it returns the keys Redis does not hold.
// With load, due values are refreshed.
func (c *Cache[V]) readMany(ctx context.Context, keys []string, out map[string]V, load func(ctx context.Context, missing []string) (map[string]V, error)) (absent []string, err error) {
	rks := make([]string, len(keys))
	gens := make([]uint64, len(keys))
	for i, k := range keys {
		rks[i] = c.RedisKey(k)
		gens[i] = c.localGen(k)
	}
	start := c.clock()
	pipe := c.p.Client().Pipeline()
	mget := pipe.MGet(ctx, rks...)
	var pttls []*redis.DurationCmd
	if c.local != nil || c.cfg.RefreshAfter > 0 {
		pttls = make([]*redis.DurationCmd, len(keys))
		for i, rk := range rks {
			pttls[i] = pipe.PTTL(ctx, rk)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if ctx.Err() == nil {
			c.st.redisErrors.Add(1)
		}
		return nil, fmt.Errorf("cache %q: get %d key(s): %w", c.name, len(keys), err)
	}
	for i, raw := range mget.Val() {
		s, ok := raw.(string)
		if !ok {
			c.st.misses.Add(1)
			absent = append(absent, keys[i])
			continue
		}
		pttl := time.Duration(-1)
		if pttls != nil {
			pttl = pttls[i].Val()
		}
		switch v, got := c.gotValue(ctx, keys[i], []byte(s), start, pttl, gens[i], load); got {
		case gotValue:
			out[keys[i]] = v
		case gotUndecodable:
			absent = append(absent, keys[i])
		}
	}
	return absent, nil
}

// What a bulk read found for a key.
type got int

const (
	gotValue       got = iota
	gotNotFound        // a negative entry
	gotUndecodable     // deleted, and counted
)

// gotValue decodes a value a bulk read found and keeps it locally.
func (c *Cache[V]) gotValue(ctx context.Context, key string, data []byte, start int64, pttl time.Duration, gen uint64, load func(ctx context.Context, missing []string) (map[string]V, error)) (V, got) {
	e, err := c.decode(key, data)
	if err != nil {
		c.dropUndecodable(ctx, key, data)
		return e.v, gotUndecodable
	}
	c.st.redisHits.Add(1)
	c.fillLocal(key, e, start, pttl, gen)
	if e.notFound {
		return e.v, gotNotFound
	}
	if load != nil && isStale(e, pttl) {
		c.refreshFound(ctx, key, loaderOf(oneOf(key, load), nil))
	}
	return e.v, gotValue
}

// oneOf adapts a bulk loader to one key: a key it does not return is not
// found.
func oneOf[V any](key string, load func(ctx context.Context, missing []string) (map[string]V, error)) func(ctx context.Context) (V, error) {
	return func(ctx context.Context) (V, error) {
		m, err := load(ctx, []string{key})
		v, ok := m[key]
		switch {
		case err != nil:
			return v, err
		case !ok:
			return v, fmt.Errorf("bulk loader did not return the key: %w", ErrNotFound)
		}
		return v, nil
	}
}

// SetMany writes values, each with ttl, in one Redis round trip (one
// pipeline: the keys' load locks deleted, one SET each, the invalidations),
// and keeps them locally. Everything is encoded first: a value the codec
// cannot encode or over Config.MaxValueBytes, a bad key, more than
// MaxBulkKeys values or a ttl that is not positive fail the call and write
// nothing. If the write fails the local copies are dropped. Each key is
// written as Set writes it; the writes are not atomic together.
func (c *Cache[V]) SetMany(ctx context.Context, values map[string]V, ttl time.Duration) error {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if _, err := c.checkKeys("SetMany", keys); err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	if ttl <= 0 {
		return fmt.Errorf("%w: cache %q: SetMany: ttl must be positive, got %s", ErrInvalid, c.name, ttl)
	}
	es := make([]encoded[V], len(keys))
	ttls := make([]time.Duration, len(keys))
	gens := make([]uint64, len(keys))
	for i, k := range keys {
		e, err := c.encode(k, values[k])
		if err != nil {
			return err
		}
		ttls[i] = c.redisTTL(ttl)
		c.stamp(&e, ttls[i])
		es[i], gens[i] = e, c.localGen(k)
	}
	start := c.clock()
	pipe := c.p.Client().Pipeline()
	if !c.cfg.NoLock {
		// First, as in setRedis: a fill between the DEL and the SET would
		// otherwise write an older value over it.
		locks := make([]string, len(keys))
		for i, k := range keys {
			locks[i] = c.lockKey(k)
		}
		pipe.Del(ctx, locks...)
	}
	for i, k := range keys {
		pipe.Set(ctx, c.RedisKey(k), es[i].data, ttls[i])
	}
	sent := c.publish(ctx, pipe, opKeys, keys...)
	_, err := pipe.Exec(ctx)
	for _, k := range keys {
		c.flights.Forget(k)
	}
	if err != nil {
		c.st.redisErrors.Add(1)
		for _, k := range keys {
			c.dropLocal(k)
		}
		return fmt.Errorf("cache %q: set %d key(s): %w", c.name, len(keys), err)
	}
	c.st.invalSent.Add(uint64(sent))
	store := c.storeMany()
	for i, k := range keys {
		store(k, es[i], start, ttls[i], gens[i])
	}
	return nil
}

// storeMany returns a storeLocal for the keys of one bulk write, whose
// generations were all taken before it: each store marks its shard
// changed, and the call's own earlier stores in a shard must not count as
// a change that came meanwhile (they would drop every key after the first
// of each shard).
func (c *Cache[V]) storeMany() func(key string, e encoded[V], start int64, ttl time.Duration, gen uint64) {
	own := make(map[*lshard[V]]uint64)
	return func(key string, e encoded[V], start int64, ttl time.Duration, gen uint64) {
		if c.local == nil {
			return
		}
		s := c.local.shardOf(key)
		c.storeLocal(key, e, start, ttl, gen+own[s])
		own[s]++
	}
}

// GetOrLoadMany returns the values of keys, loading the ones neither tier
// holds with one call of load, which gets them all at once (without
// duplicates) and returns the values it found: a key it leaves out is not
// found (cached as such with Config.NegativeTTL) and left out of the
// result, as are keys cached as not found.
//
// It takes two Redis round trips, plus one per MiB of loaded values: the
// local tier first; then one script that reads the missing keys and, for
// those still missing, takes their load locks; after load, one script per
// MiB of values that writes them (each only while its lock holds, so a Set
// or Delete made meanwhile wins, as for GetOrLoad) and publishes the
// invalidations. A load that fails or panics, or a lock script whose reply
// is lost, releases the locks.
//
// Stampede protection holds per key across instances: a key whose lock
// another instance (or another call in this process) holds is not given to
// load; this call waits for that load as GetOrLoad does, one key after the
// other, and loads the key alone should the holder fail. Within a process,
// a GetOrLoad of a key this call is loading waits for it. What does not
// hold: two GetOrLoadMany calls that miss the same keys at the same moment
// both read Redis (one takes the locks, the other waits), and load runs on
// the caller's goroutine and context (with Config.LoadTimeout), so a caller
// that gives up cancels its own batch (its locks are released at once and
// a waiting instance loads the keys).
//
// The batch needs one of Config.MaxLoads slots; without one the keys Redis
// holds are still returned, with ErrTooManyLoads. While Redis fails, load
// gets every missing key and the values are kept locally only, as for
// GetOrLoad. Errors of single keys (a value over MaxValueBytes, one the
// codec cannot encode) are joined in the error; the map still holds every
// value got.
func (c *Cache[V]) GetOrLoadMany(ctx context.Context, keys []string, load func(ctx context.Context, missing []string) (map[string]V, error)) (map[string]V, error) {
	uniq, err := c.checkKeys("GetOrLoadMany", keys)
	if err != nil {
		return nil, err
	}
	if load == nil {
		return nil, fmt.Errorf("%w: cache %q: GetOrLoadMany: nil loader", ErrInvalid, c.name)
	}
	out := make(map[string]V, len(uniq))
	missing := c.localMany(ctx, uniq, out, load)
	if len(missing) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return out, fmt.Errorf("cache %q: GetOrLoadMany: %w", c.name, err)
	}
	b := batch[V]{c: c, out: out, load: load}
	if err := b.start(ctx, missing); err != nil {
		return out, err
	}
	// The batch's load slot is given back: waiting for another instance's
	// load takes one of its own.
	for _, k := range b.held {
		v, err := c.GetOrLoad(ctx, k, oneOf(k, load))
		switch {
		case err == nil:
			out[k] = v
		case !errors.Is(err, ErrNotFound):
			b.errs = append(b.errs, err)
		}
	}
	return out, errors.Join(b.errs...)
}

// batch is one GetOrLoadMany's load.
type batch[V any] struct {
	c    *Cache[V]
	ctx  context.Context
	out  map[string]V
	load func(ctx context.Context, missing []string) (map[string]V, error)
	held []string // locked by another load: waited for one by one
	errs []error
}

// start runs the batch on missing, in one of Config.MaxLoads slots; without
// one it reads missing from Redis only and fails with ErrTooManyLoads if
// some are left.
func (b *batch[V]) start(ctx context.Context, missing []string) error {
	c := b.c
	if !c.loads.startLoad() {
		c.st.loadsRefused.Add(1)
		missing, err := c.readMany(ctx, missing, b.out, b.load)
		if err != nil || len(missing) == 0 {
			return err
		}
		return fmt.Errorf("cache %q: GetOrLoadMany: %d key(s) to load: %w (Config.MaxLoads is %d)", c.name, len(missing), ErrTooManyLoads, c.cfg.MaxLoads)
	}
	defer c.loads.endLoad()
	// The batch's context: the caller's values and its cancellation (a
	// caller who gives up stops its batch), ended by Close too, within
	// LockTTL+LoadTimeout; tracked so that Close waits for it.
	bctx, cancel, ok := c.loads.begin(ctx, c.cfg.LockTTL+c.cfg.LoadTimeout)
	if !ok {
		return fmt.Errorf("cache %q: GetOrLoadMany: %w", c.name, ErrClosed)
	}
	defer c.loads.end()
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	b.ctx = bctx
	b.run(missing)
	return nil
}

// Results of lockManyScript, per key.
const (
	manyHeld  int64 = 0 // {0}
	manyValue int64 = 1 // {1, value, pttl}
	manyTaken int64 = 2 // {2}
)

// lockManyScript is lockScript for many keys: per key, the value if it is
// there, else the load lock if it is free.
//
// KEYS value, lock pairs; ARGV[1] token, ARGV[2] lock ttl in ms.
const lockManyScript = `
local out = {}
for i = 1, #KEYS / 2 do
	local vk = KEYS[2 * i - 1]
	local v = redis.call('GET', vk)
	if v then
		out[i] = {1, v, redis.call('PTTL', vk)}
	elseif redis.call('SET', KEYS[2 * i], ARGV[1], 'NX', 'PX', ARGV[2]) then
		out[i] = {2}
	else
		out[i] = {0}
	end
end
return out
`

// fillManyScript is fillScript for many keys: per key, while its lock still
// holds ARGV[1], the lock is released and the value (if not empty) written;
// then the messages are published. It returns 1 or 0 per key: written.
//
// KEYS value, lock pairs; ARGV[1] token, ARGV[2] channel, ARGV[3] number of
// messages m, ARGV[4..3+m] the messages, then a value and its ttl in ms per
// key.
const fillManyScript = `
local m = tonumber(ARGV[3])
local wrote = {}
for i = 1, #KEYS / 2 do
	local data, ttl = ARGV[3 + m + 2 * i - 1], ARGV[3 + m + 2 * i]
	wrote[i] = 0
	if redis.call('GET', KEYS[2 * i]) == ARGV[1] then
		redis.call('DEL', KEYS[2 * i])
		if data ~= '' then
			redis.call('SET', KEYS[2 * i - 1], data, 'PX', ttl)
			wrote[i] = 1
		end
	end
end
for j = 1, m do
	redis.call('PUBLISH', ARGV[2], ARGV[3 + j])
end
return wrote
`

// bulkScripts are a cache's bulk scripts.
type bulkScripts struct {
	lock, fill *redis.Script
}

func newBulkScripts() bulkScripts {
	return bulkScripts{lock: redis.NewScript(lockManyScript), fill: redis.NewScript(fillManyScript)}
}

func (b *batch[V]) pairs(keys []string) []string {
	ks := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		ks = append(ks, b.c.RedisKey(k), b.c.lockKey(k))
	}
	return ks
}

// run reads and locks missing, loads what it locked and writes it.
func (b *batch[V]) run(missing []string) {
	c := b.c
	gens := make(map[string]uint64, len(missing))
	for _, k := range missing {
		gens[k] = c.localGen(k)
	}
	if c.cfg.NoLock {
		b.runWithoutLock(missing, gens)
		return
	}
	token := c.lockToken()
	start := c.clock()
	r, err := c.bulk.lock.Run(b.ctx, c.p.Client(), b.pairs(missing), token, strconv.FormatInt(c.cfg.LockTTL.Milliseconds(), 10)).Slice()
	if err != nil {
		// The script may have run, and taken locks, before its reply was
		// lost (the caller's deadline or a read timeout while Redis ran
		// it): release whatever this token holds, or every other
		// instance's load of these keys waits for LockTTL. (Not when the
		// pool sent nothing: Redis marked down, the lane exhausted.)
		if sent(err) {
			b.release(missing, token)
		}
		if b.ctx.Err() != nil {
			b.errs = append(b.errs, c.batchEnded(b.ctx, err))
			return
		}
		// Redis is failing: load everything here, keep it here only.
		c.st.redisErrors.Add(1)
		c.log.Warn("cache: bulk lock failed; loading without the lock, keeping the values locally only", "keys", len(missing), "err", err)
		b.loadAndKeep(missing, keepLocalOnly, gens)
		return
	}
	var taken []string
	for i, k := range missing {
		res, _ := r[i].([]any)
		state := manyHeld
		if len(res) > 0 {
			state, _ = res[0].(int64)
		}
		switch state {
		case manyTaken:
			taken = append(taken, k)
		case manyValue:
			data, _ := res[1].(string)
			pttl, _ := res[2].(int64)
			switch v, got := c.gotValue(b.ctx, k, []byte(data), start, pttlDuration(pttl), gens[k], b.load); got {
			case gotValue:
				b.out[k] = v
			case gotUndecodable:
				b.held = append(b.held, k) // deleted: load it alone
			}
		default:
			b.held = append(b.held, k)
		}
	}
	if len(taken) > 0 {
		c.st.misses.Add(uint64(len(taken)))
		b.loadAndKeep(taken, keepLocked(token), gens)
	}
}

// runWithoutLock is run under Config.NoLock: one read of missing, one
// loader call for what Redis does not hold, and the values written only
// where the keys are still missing (SET NX), as a GetOrLoad's are: a Set
// made meanwhile wins.
func (b *batch[V]) runWithoutLock(missing []string, gens map[string]uint64) {
	c := b.c
	absent, err := c.readMany(b.ctx, missing, b.out, b.load)
	switch {
	case err == nil && len(absent) > 0:
		b.loadAndKeep(absent, keepIfMissing, gens)
	case err == nil:
	case b.ctx.Err() != nil:
		b.errs = append(b.errs, c.batchEnded(b.ctx, err))
	default:
		c.log.Warn("cache: bulk read failed; loading without Redis, keeping the values locally only", "keys", len(missing), "err", err)
		b.loadAndKeep(missing, keepLocalOnly, gens)
	}
}

// loadAndKeep calls the loader for keys and keeps its answers as k says:
// under the locks k.token holds, only where the keys are still missing
// (Config.NoLock), or locally only.
func (b *batch[V]) loadAndKeep(keys []string, k keep, gens map[string]uint64) {
	token := k.token
	c := b.c
	c.st.loads.Add(1)
	vals, err := b.callLoad(keys, token)
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(b.ctx), writeTimeout)
	defer wcancel()
	if err != nil {
		b.release(keys, token)
		if b.ctx.Err() != nil {
			b.errs = append(b.errs, c.batchEnded(b.ctx, err))
			return
		}
		c.st.loadErrors.Add(1)
		b.errs = append(b.errs, fmt.Errorf("cache %q: load %d key(s): %w", c.name, len(keys), err))
		return
	}
	es := make([]encoded[V], len(keys))
	ttls := make([]time.Duration, len(keys))
	keep := make([]bool, len(keys))
	for i, k := range keys {
		v, ok := vals[k]
		switch {
		case ok:
			b.out[k] = v
			e, err := c.encode(k, v)
			if err != nil {
				c.st.loadErrors.Add(1)
				b.errs = append(b.errs, err)
				continue // empty data: the lock is released
			}
			es[i], ttls[i], keep[i] = e, c.cfg.TTL, true
		case c.cfg.NegativeTTL > 0:
			es[i], ttls[i], keep[i] = negative[V](), c.cfg.NegativeTTL, true
		}
	}
	store := c.storeMany()
	if k.localOnly {
		now := c.clock()
		for i, k := range keys {
			if keep[i] {
				store(k, es[i], now, ttls[i], gens[k])
			}
		}
		return
	}
	for i := range keys {
		if keep[i] {
			ttls[i] = c.redisTTL(ttls[i])
			c.stamp(&es[i], ttls[i])
		}
	}
	start := c.clock()
	var wrote []bool
	if token != "" {
		wrote, err = b.fillAll(wctx, keys, es, ttls, token)
	} else {
		wrote, err = b.fillIfMissing(wctx, keys, es, ttls, keep)
	}
	for i, k := range keys {
		switch {
		case !keep[i]:
		case err != nil:
			// The values are good; only caching them failed.
			store(k, es[i], c.clock(), ttls[i], gens[k])
		case wrote[i]:
			store(k, es[i], start, ttls[i], gens[k])
		}
		// Our own note is ignored by our subscriber: wake this process's
		// waiters (a GetOrLoad of one of the keys) here.
		c.wake(k)
	}
}

// callLoad calls the loader for keys, which token has locked. A loader
// that panics (or calls runtime.Goexit) releases the locks on its way out:
// the caller may recover the panic (net/http does), and the locks would
// otherwise stall every instance's load of those keys for LockTTL.
func (b *batch[V]) callLoad(keys []string, token string) (map[string]V, error) {
	returned := false
	defer func() {
		if !returned {
			b.release(keys, token)
		}
	}()
	lctx, cancel := context.WithTimeout(b.ctx, b.c.cfg.LoadTimeout)
	defer cancel()
	vals, err := b.load(lctx, slices.Clone(keys))
	returned = true
	return vals, err
}

// release gives up the locks token holds on keys, without values, and wakes
// this process's waiters for them (our own note does not reach them), so
// that a waiting load takes over at once rather than at the locks' expiry.
// Without a token (Config.NoLock, Redis failing) there is nothing to do.
func (b *batch[V]) release(keys []string, token string) {
	if token == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), writeTimeout)
	defer cancel()
	_, _ = b.fill(ctx, keys, make([]encoded[V], len(keys)), make([]time.Duration, len(keys)), token)
	for _, k := range keys {
		b.c.wake(k)
	}
}

// fillBytes bounds the values (and keys) one fillManyScript call carries (a
// value larger than that goes alone). The script holds Redis while it copies
// every value, and MaxBulkKeys values of MaxValueBytes (1 GiB by default)
// would reach Redis's client-query-buffer-limit (1 GiB by default), past
// which Redis closes the connection: the batch would never be cached and
// its locks would stay until LockTTL.
const fillBytes = 1 << 20

// fillAll runs fill over keys in calls of at most fillBytes of values and
// keys. The
// keys are independent (each written only while its own lock holds), so
// splitting changes nothing but the size of each call. On an error the
// calls before it have written their keys; the caller keeps every value
// locally, as when a single fill fails.
func (b *batch[V]) fillAll(ctx context.Context, keys []string, es []encoded[V], ttls []time.Duration, token string) ([]bool, error) {
	// A key is in the call three times: its value's key, its lock's, and
	// its invalidation message (keys are up to MaxKeyBytes each).
	size := func(i int) int { return len(es[i].data) + 3*len(keys[i]) }
	wrote := make([]bool, 0, len(keys))
	for i := 0; i < len(keys); {
		j, n := i+1, size(i)
		for j < len(keys) && n+size(j) <= fillBytes {
			n += size(j)
			j++
		}
		w, err := b.fill(ctx, keys[i:j], es[i:j], ttls[i:j], token)
		if err != nil {
			return nil, err
		}
		wrote = append(wrote, w...)
		i = j
	}
	return wrote, nil
}

// fill runs fillManyScript for keys (an empty data: release only).
func (b *batch[V]) fill(ctx context.Context, keys []string, es []encoded[V], ttls []time.Duration, token string) ([]bool, error) {
	c := b.c
	var msgs []string
	if !c.cfg.NoInvalidation {
		msgs = keyMessages(c.id, opLoaded, keys)
	}
	args := make([]any, 0, 3+len(msgs)+2*len(keys))
	args = append(args, token, c.channel, len(msgs))
	for _, m := range msgs {
		args = append(args, m)
	}
	for i := range keys {
		args = append(args, es[i].data, ttls[i].Milliseconds())
	}
	r, err := c.bulk.fill.Run(ctx, c.p.Client(), b.pairs(keys), args...).Int64Slice()
	if err != nil {
		c.st.redisErrors.Add(1)
		c.log.Warn("cache: could not write loaded values to Redis; keeping them locally only", "keys", len(keys), "err", err)
		return nil, err
	}
	c.st.invalSent.Add(uint64(len(msgs)))
	wrote := make([]bool, len(keys))
	for i := range wrote {
		wrote[i] = i < len(r) && r[i] == 1
	}
	return wrote, nil
}

// fillIfMissing writes the kept values of keys where the keys are still
// missing (SET NX), in one pipeline with the invalidations.
func (b *batch[V]) fillIfMissing(ctx context.Context, keys []string, es []encoded[V], ttls []time.Duration, keep []bool) ([]bool, error) {
	c := b.c
	pipe := c.p.Client().Pipeline()
	nx := make([]*redis.BoolCmd, len(keys))
	for i, k := range keys {
		if keep[i] {
			nx[i] = pipe.SetNX(ctx, c.RedisKey(k), es[i].data, ttls[i])
		}
	}
	sent := c.publish(ctx, pipe, opLoaded, keys...)
	if _, err := pipe.Exec(ctx); err != nil {
		c.st.redisErrors.Add(1)
		c.log.Warn("cache: could not write loaded values to Redis; keeping them locally only", "keys", len(keys), "err", err)
		return nil, err
	}
	c.st.invalSent.Add(uint64(sent))
	wrote := make([]bool, len(keys))
	for i, cmd := range nx {
		wrote[i] = cmd != nil && cmd.Val()
	}
	return wrote, nil
}

// batchEnded is the error of a batch whose context ended.
func (c *Cache[V]) batchEnded(ctx context.Context, err error) error {
	if c.loads.isClosed() {
		return fmt.Errorf("cache %q: GetOrLoadMany: %w", c.name, ErrClosed)
	}
	return fmt.Errorf("cache %q: GetOrLoadMany: %w (%v)", c.name, context.Cause(ctx), err)
}
