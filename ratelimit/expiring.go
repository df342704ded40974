package ratelimit

import (
	"hash/maphash"
	"sync"
)

// expiring is a bounded map from a key to a value that stops mattering at an
// instant, exp: the denied cache (a key is denied until exp) and FailLocal's
// limiter (a key's bucket is full again at exp, so forgetting it then loses
// nothing).
//
// It has a fixed capacity and no timer. An entry past its instant is dropped
// when it is looked up; when the map is full, the entry with the earliest
// instant makes room, which is an expired one if there is any, else the one
// that would have expired soonest: the least to lose. A min-heap on exp per
// shard finds it in O(log n).
//
// Keys are spread over shards, each with its own lock, so that many keys
// used in parallel do not queue on one mutex; below shardedFrom entries
// there is one shard and eviction order is exact, above it exact per shard.
type expiring[V any] struct {
	seed   maphash.Seed
	shards []expShard[V]
}

const (
	shardedFrom = 1024
	shardCount  = 16
)

type expShard[V any] struct {
	mu        sync.Mutex
	items     map[string]*expItem[V]
	heap      []*expItem[V] // min-heap on exp; item.idx is its position
	cap       int
	evictions uint64
	_         [64]byte // keep neighbouring shards' locks off one cache line
}

type expItem[V any] struct {
	key string
	exp int64
	idx int
	val V
}

func newExpiring[V any](capacity int) *expiring[V] {
	n := 1
	if capacity >= shardedFrom {
		n = shardCount
	}
	e := &expiring[V]{seed: maphash.MakeSeed(), shards: make([]expShard[V], n)}
	for i := range e.shards {
		s := &e.shards[i]
		s.cap = capacity / n
		if i < capacity%n {
			s.cap++
		}
		s.items = make(map[string]*expItem[V], min(s.cap, 1024))
	}
	return e
}

// shard returns the shard that holds key; the caller locks it.
func (e *expiring[V]) shard(key string) *expShard[V] {
	if len(e.shards) == 1 {
		return &e.shards[0]
	}
	return &e.shards[maphash.String(e.seed, key)%uint64(len(e.shards))]
}

// len returns the number of entries, expired ones not yet dropped included.
func (e *expiring[V]) len() int {
	n := 0
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		n += len(s.items)
		s.mu.Unlock()
	}
	return n
}

// evictions returns how many live entries were dropped to make room.
func (e *expiring[V]) evictions() uint64 {
	var n uint64
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		n += s.evictions
		s.mu.Unlock()
	}
	return n
}

// get returns key's entry if its instant is after now, dropping it if not.
// The caller holds s.mu and must not keep the item after unlocking.
func (s *expShard[V]) get(key string, now int64) *expItem[V] {
	it := s.items[key]
	if it == nil {
		return nil
	}
	if now >= it.exp {
		s.remove(it)
		return nil
	}
	return it
}

// set stores val for key until exp, making room if the shard is full. The
// caller holds s.mu.
func (s *expShard[V]) set(key string, exp int64, val V, now int64) {
	if it := s.items[key]; it != nil {
		it.exp, it.val = exp, val
		s.fix(it.idx)
		return
	}
	if s.cap == 0 {
		return
	}
	var it *expItem[V]
	if len(s.items) >= s.cap {
		it = s.heap[0] // earliest instant: expired, or closest to it
		if it.exp > now {
			s.evictions++
		}
		s.remove(it)
	} else {
		it = new(expItem[V])
	}
	*it = expItem[V]{key: key, exp: exp, idx: len(s.heap), val: val}
	s.items[key] = it
	s.heap = append(s.heap, it)
	s.up(it.idx)
}

func (s *expShard[V]) remove(it *expItem[V]) {
	delete(s.items, it.key)
	i, last := it.idx, len(s.heap)-1
	if i != last {
		s.swap(i, last)
	}
	s.heap[last] = nil
	s.heap = s.heap[:last]
	if i != last {
		s.fix(i)
	}
}

func (s *expShard[V]) fix(i int) {
	if !s.down(i) {
		s.up(i)
	}
}

func (s *expShard[V]) swap(i, j int) {
	h := s.heap
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (s *expShard[V]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if s.heap[p].exp <= s.heap[i].exp {
			return
		}
		s.swap(i, p)
		i = p
	}
}

// down sifts i down and reports whether it moved.
func (s *expShard[V]) down(i int) bool {
	start, n := i, len(s.heap)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && s.heap[r].exp < s.heap[c].exp {
			c = r
		}
		if s.heap[i].exp <= s.heap[c].exp {
			break
		}
		s.swap(i, c)
		i = c
	}
	return i > start
}

// drop removes key's entry, if any.
func (e *expiring[V]) drop(key string) {
	s := e.shard(key)
	s.mu.Lock()
	if it := s.items[key]; it != nil {
		s.remove(it)
	}
	s.mu.Unlock()
}
