package cache

import (
	"hash/maphash"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// local is the in-process tier: typed values (a hit decodes nothing), bounded
// by entries and by bytes at all times, S3-FIFO eviction, lazy expiry and no
// timer of its own.
//
// It is hand-written rather than taken from otter v2: docs/cache.md says
// why, and what would make switching worth it.
//
// The tier is split into shards by key hash, each bounded by its share of
// both limits, so the sum never exceeds them. A hit takes its shard's read
// lock, bumps the entry's frequency with one atomic add while it is below
// 3, and counts itself in the shard (no counter shared by every core).
type local[V any] struct {
	shards []lshard[V]
	mask   uint64
	seed   maphash.Seed
	clock  func() int64 // see newClock
}

// maxFreq caps an entry's access count, as in S3-FIFO: three hits are as good
// as a hundred for deciding what to keep.
const maxFreq = 3

type lshard[V any] struct {
	mu   sync.RWMutex
	hits atomic.Uint64
	// gen changes whenever a key of the shard is written or invalidated. A
	// fill from Redis or from a loader records it before reading and is
	// dropped if it changed meanwhile, so a value read before an
	// invalidation cannot be stored after it (see Cache.getRedis).
	gen atomic.Uint64

	// The rest is guarded by mu (written under the write lock only).
	m            map[string]*lentry[V]
	small, main  list[V] // S3-FIFO's probationary and main queues, oldest first
	ghost        ghost   // hashes of keys recently evicted from small
	entries      int64
	bytes        int64
	smallEntries int64
	smallBytes   int64
	maxEntries   int64
	maxBytes     int64
	evictions    uint64
	expirations  uint64

	_ [64]byte // keeps the next shard's lock off this shard's cache lines
}

type lentry[V any] struct {
	key      string
	val      V
	notFound bool // a negative-cache entry
	inMain   bool
	freq     atomic.Int32
	expires  int64 // on the tier's clock; the entry is gone from then on
	// refreshAt is when a GetOrLoad that reads the entry should refresh it
	// (Config.RefreshAfter; neverRefresh without). The read that claims a
	// refresh moves it on by retry (see getOrClaim).
	refreshAt atomic.Int64
	retry     int64 // written under the shard's write lock
	weight    int64 // len(key) + encoded size
	prev      *lentry[V]
	next      *lentry[V]
}

// Shard sizing: about four shards per P (more shards, less contention on
// the read locks), but never so many that a shard holds fewer than
// minShardEntries entries or less than one largest value.
const (
	maxShards       = 64
	minShardEntries = 32
)

func shardCount(maxEntries int, maxBytes int64, maxValue int) int {
	n := 1 << bits.Len(uint(4*runtime.GOMAXPROCS(0)-1))
	n = min(n, maxShards)
	for n > 1 && (maxEntries/n < minShardEntries || maxBytes/int64(n) < int64(maxValue)) {
		n /= 2
	}
	return n
}

// newClock returns the clock of expiries: nanoseconds since it was made.
// Without an injected clock (nil) it reads only the monotonic clock
// (time.Since), about half the cost of time.Now, which a hit pays.
func newClock(now func() time.Time) func() int64 {
	if now == nil {
		base := time.Now()
		return func() int64 { return int64(time.Since(base)) }
	}
	base := now()
	return func() int64 { return int64(now().Sub(base)) }
}

func newLocal[V any](maxEntries int, maxBytes int64, maxValue int, clock func() int64) *local[V] {
	n := shardCount(maxEntries, maxBytes, maxValue)
	l := &local[V]{shards: make([]lshard[V], n), mask: uint64(n - 1), seed: maphash.MakeSeed(), clock: clock}
	for i := range l.shards {
		s := &l.shards[i]
		// Shares round down, so the shards together never exceed the limits.
		s.maxEntries = int64(maxEntries / n)
		s.maxBytes = maxBytes / int64(n)
		if i < maxEntries%n {
			s.maxEntries++ // hand out the remainder; still no more than maxEntries in all
		}
		s.m = make(map[string]*lentry[V])
		s.ghost.init(int(s.maxEntries))
	}
	return l
}

func (l *local[V]) hash(key string) uint64 { return maphash.String(l.seed, key) }

func (l *local[V]) shardOf(key string) *lshard[V] {
	if l.mask == 0 {
		return &l.shards[0]
	}
	return &l.shards[l.hash(key)&l.mask]
}

// get returns the entry for key if it is there and has not expired.
func (l *local[V]) get(key string) (v V, notFound, ok bool) {
	s := l.shardOf(key)
	now := l.clock()
	s.mu.RLock()
	e := s.m[key]
	if e == nil {
		s.mu.RUnlock()
		return v, false, false
	}
	if now >= e.expires {
		s.mu.RUnlock()
		s.expire(key, e)
		return v, false, false
	}
	v, notFound = e.val, e.notFound
	if e.freq.Load() < maxFreq {
		e.freq.Add(1) // racing hits may push it a little past maxFreq; harmless
	}
	s.mu.RUnlock()
	s.hits.Add(1)
	return v, notFound, true
}

// expire removes e if it is still key's entry. Expiry is lazy: an expired
// entry goes when it is read or reaches the head of its queue.
func (s *lshard[V]) expire(key string, e *lentry[V]) {
	s.mu.Lock()
	if s.m[key] == e {
		s.unlink(e)
		s.expirations++
	}
	s.mu.Unlock()
}

// gen returns key's shard generation, to pass to fill or store later.
func (l *local[V]) gen(key string) uint64 { return l.shardOf(key).gen.Load() }

// fill keeps a value read from Redis, unless key's shard changed since gen
// was taken: what the read saw may then be older than a write that landed
// since, and whatever the tier holds now is at least as new.
func (l *local[V]) fill(key string, v V, notFound bool, size int, expires int64, d due, gen uint64) {
	h := l.hash(key)
	s := &l.shards[h&l.mask]
	now := l.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != gen {
		return
	}
	s.set(l, h, key, v, notFound, int64(len(key)+size), expires, d, now)
}

// store keeps a value this process wrote to Redis and marks the shard
// changed. If the shard changed since gen was taken, another write may have
// landed in between and nobody knows which is newer, so the key is dropped
// instead and the next read goes to Redis.
func (l *local[V]) store(key string, v V, notFound bool, size int, expires int64, d due, gen uint64) {
	h := l.hash(key)
	s := &l.shards[h&l.mask]
	now := l.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.gen.Load() != gen
	s.gen.Add(1)
	if changed {
		s.remove(key)
		return
	}
	s.set(l, h, key, v, notFound, int64(len(key)+size), expires, d, now)
}

// set puts key's entry (h is its hash) in the shard and evicts down to the
// bounds; an entry that cannot be kept (too heavy for the shard, already
// expired) takes the old one with it. The caller holds s.mu.
func (s *lshard[V]) set(l *local[V], h uint64, key string, v V, notFound bool, weight, expires int64, d due, now int64) {
	old := s.m[key]
	if weight > s.maxBytes || s.maxEntries == 0 || expires <= now {
		if old != nil {
			s.unlink(old)
		}
		return
	}
	if old != nil {
		if !old.inMain {
			s.smallBytes += weight - old.weight
		}
		s.bytes += weight - old.weight
		old.val, old.notFound, old.expires, old.weight = v, notFound, expires, weight
		old.refreshAt.Store(d.at)
		old.retry = d.retry
	} else {
		e := &lentry[V]{key: key, val: v, notFound: notFound, expires: expires, weight: weight}
		e.refreshAt.Store(d.at)
		e.retry = d.retry
		if s.ghost.contains(h) {
			e.inMain = true
			s.main.pushBack(e)
		} else {
			s.small.pushBack(e)
			s.smallEntries++
			s.smallBytes += weight
		}
		s.m[key] = e
		s.entries++
		s.bytes += weight
	}
	for s.entries > s.maxEntries || s.bytes > s.maxBytes {
		s.evictOne(now, l)
	}
}

// remove removes key's entry, if any. The caller holds s.mu.
func (s *lshard[V]) remove(key string) {
	if e := s.m[key]; e != nil {
		s.unlink(e)
	}
}

// drop removes key and marks its shard changed (an invalidation).
func (l *local[V]) drop(key string) {
	s := l.shardOf(key)
	s.mu.Lock()
	s.gen.Add(1)
	s.remove(key)
	s.mu.Unlock()
}

// flush empties the tier and marks every shard changed.
func (l *local[V]) flush() {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.gen.Add(1)
		clear(s.m)
		s.small, s.main = list[V]{}, list[V]{}
		s.entries, s.bytes, s.smallEntries, s.smallBytes = 0, 0, 0, 0
		s.mu.Unlock()
	}
}

// localStats is the tier's part of Stats.
type localStats struct {
	hits, evictions, expirations uint64
	entries, bytes               int64
}

func (l *local[V]) stats() localStats {
	var st localStats
	for i := range l.shards {
		s := &l.shards[i]
		st.hits += s.hits.Load()
		s.mu.RLock()
		st.evictions += s.evictions
		st.expirations += s.expirations
		st.entries += s.entries
		st.bytes += s.bytes
		s.mu.RUnlock()
	}
	return st
}

func (s *lshard[V]) unlink(e *lentry[V]) {
	if e.inMain {
		s.main.remove(e)
	} else {
		s.small.remove(e)
		s.smallEntries--
		s.smallBytes -= e.weight
	}
	delete(s.m, e.key)
	s.entries--
	s.bytes -= e.weight
}
