package cache

// evictOne removes one entry, S3-FIFO style: from the small queue while it
// holds more than a tenth of the shard (by entries or bytes), else from the
// main queue. Expired entries met on the way go first.
func (s *lshard[V]) evictOne(now int64, l *local[V]) {
	if s.small.len > 0 && (s.main.len == 0 || s.smallEntries*10 > s.maxEntries || s.smallBytes*10 > s.maxBytes) {
		if s.evictSmall(now, l) {
			return
		}
	}
	s.evictMain(now)
}

// evictSmall looks at the oldest entries of the small queue: one read since
// it was inserted moves it to main, none evicts it (and remembers its hash
// in the ghost queue, so that a quick return goes straight to main). It
// reports whether it evicted one; it may instead have moved them all.
func (s *lshard[V]) evictSmall(now int64, l *local[V]) bool {
	for s.small.len > 0 {
		e := s.small.head
		if e.expires <= now {
			s.unlink(e)
			s.expirations++
			return true
		}
		if e.freq.Load() > 0 {
			s.small.remove(e)
			s.smallEntries--
			s.smallBytes -= e.weight
			e.freq.Store(0)
			e.inMain = true
			s.main.pushBack(e)
			continue
		}
		s.ghost.add(l.hash(e.key))
		s.unlink(e)
		s.evictions++
		return true
	}
	return false
}

// evictMain gives every entry of the main queue as many second chances as it
// has reads (at most maxFreq) before evicting it.
func (s *lshard[V]) evictMain(now int64) {
	for s.main.len > 0 {
		e := s.main.head
		if e.expires <= now {
			s.unlink(e)
			s.expirations++
			return
		}
		if f := e.freq.Load(); f > 0 {
			e.freq.Store(min(f, maxFreq) - 1)
			s.main.remove(e)
			s.main.pushBack(e)
			continue
		}
		s.unlink(e)
		s.evictions++
		return
	}
}

// list is an intrusive doubly linked list, oldest first.
type list[V any] struct {
	head, tail *lentry[V]
	len        int
}

func (l *list[V]) pushBack(e *lentry[V]) {
	e.prev, e.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.len++
}

func (l *list[V]) remove(e *lentry[V]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
	l.len--
}

// ghost remembers the hashes of the last n keys evicted from the small
// queue, in a ring with a counting set beside it: bounded, no pointers.
// Both grow with evictions up to n rather than being allocated for n up
// front: an empty cache with MaxEntries 10,000,000 would otherwise hold
// 364 MiB.
type ghost struct {
	ring []uint64 // appended to until it holds n, then a ring
	n    int
	next int // the oldest hash, once the ring is full
	set  map[uint64]uint32
}

func (g *ghost) init(n int) {
	g.n = max(n, 1)
	g.set = make(map[uint64]uint32)
}

func (g *ghost) contains(h uint64) bool { _, ok := g.set[h]; return ok }

func (g *ghost) add(h uint64) {
	g.set[h]++
	if len(g.ring) < g.n {
		g.ring = append(g.ring, h)
		return
	}
	old := g.ring[g.next]
	if c := g.set[old]; c <= 1 {
		delete(g.set, old)
	} else {
		g.set[old] = c - 1
	}
	g.ring[g.next] = h
	g.next++
	if g.next == g.n {
		g.next = 0
	}
}
