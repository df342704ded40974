package cache

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/stretchr/testify/require"
)

// check verifies the tier's bookkeeping against its contents and its bounds.
// It must run on the test goroutine; checkErr is for other goroutines.
func (l *local[V]) check(t testing.TB, maxEntries int, maxBytes int64) {
	t.Helper()
	require.NoError(t, l.checkErr(maxEntries, maxBytes))
}

// checkErr is check's verdict as an error. It fails nothing itself and
// holds a shard's lock only while it looks at that shard, so it may run on
// any goroutine (a failure off the test goroutine must not stop it with a
// lock held).
func (l *local[V]) checkErr(maxEntries int, maxBytes int64) error {
	var entries, bytes int64
	for i := range l.shards {
		n, b, err := l.shards[i].checkErr()
		if err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
		entries += n
		bytes += b
	}
	if entries > int64(maxEntries) || bytes > maxBytes {
		return fmt.Errorf("the tier holds %d entries and %d bytes, over its bounds %d and %d", entries, bytes, maxEntries, maxBytes)
	}
	return nil
}

func (s *lshard[V]) checkErr() (entries, bytes int64, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var sn, sb int64
	for _, q := range []*list[V]{&s.small, &s.main} {
		c := 0
		for e := q.head; e != nil; e = e.next {
			if s.m[e.key] != e {
				return 0, 0, fmt.Errorf("queued entry %q is not the map's", e.key)
			}
			if e.inMain != (q == &s.main) {
				return 0, 0, fmt.Errorf("entry %q: inMain is %v in the other queue", e.key, e.inMain)
			}
			entries++
			bytes += e.weight
			if q == &s.small {
				sn++
				sb += e.weight
			}
			c++
		}
		if q.len != c {
			return 0, 0, fmt.Errorf("a queue's len is %d, it holds %d", q.len, c)
		}
	}
	switch {
	case int64(len(s.m)) != entries:
		return 0, 0, fmt.Errorf("the map holds %d entries, the queues %d: every entry is queued once", len(s.m), entries)
	case s.entries != entries || s.bytes != bytes:
		return 0, 0, fmt.Errorf("counted %d entries and %d bytes, holds %d and %d", s.entries, s.bytes, entries, bytes)
	case s.smallEntries != sn || s.smallBytes != sb:
		return 0, 0, fmt.Errorf("counted %d entries and %d bytes in small, holds %d and %d", s.smallEntries, s.smallBytes, sn, sb)
	case s.entries > s.maxEntries || s.bytes > s.maxBytes:
		return 0, 0, fmt.Errorf("%d entries and %d bytes, over its bounds %d and %d", s.entries, s.bytes, s.maxEntries, s.maxBytes)
	}
	return entries, bytes, nil
}

func TestLocalNeverExceedsItsBounds(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxEntries int
		maxBytes   int64
	}{
		{"entries bind", 200, 1 << 20},
		{"bytes bind", 100_000, 16 << 10},
		{"both bind", 500, 20 << 10},
		{"one shard", 7, 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := testutil.NewClock()
			l := newLocal[[]byte](tc.maxEntries, tc.maxBytes, 512, newClock(clk.Now))
			rng := rand.New(rand.NewPCG(1, 2))
			exp := int64(time.Hour)
			for i := range 20_000 {
				key := fmt.Sprintf("k%d", rng.IntN(3000))
				switch op := rng.IntN(10); {
				case op < 5:
					size := rng.IntN(512)
					l.fill(key, make([]byte, size), false, size, exp, never, l.gen(key))
				case op < 6:
					size := rng.IntN(512)
					l.store(key, make([]byte, size), false, size, exp, never, l.gen(key))
				case op < 9:
					l.get(key)
				default:
					l.drop(key)
				}
				if i%97 == 0 {
					l.check(t, tc.maxEntries, tc.maxBytes)
				}
			}
			l.check(t, tc.maxEntries, tc.maxBytes)
			st := l.stats()
			require.Positive(t, st.evictions, "the load overflows the tier")
			require.Positive(t, st.entries)
		})
	}
}

func TestLocalBoundsHoldUnderConcurrentWriters(t *testing.T) {
	const maxEntries, maxBytes = 300, 24 << 10
	l := newLocal[[]byte](maxEntries, maxBytes, 256, newClock(nil))
	exp := int64(time.Hour)
	stop := make(chan struct{})
	checked := make(chan error, 1)
	go func() {
		// Each shard is checked under its lock, between writes. A failure
		// comes back to the test goroutine: require here would stop this
		// goroutine, not the test.
		for {
			if err := l.checkErr(maxEntries, maxBytes); err != nil {
				checked <- err
				return
			}
			select {
			case <-stop:
				checked <- nil
				return
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range 5000 {
				key := fmt.Sprintf("k%d", rng.IntN(2000))
				size := rng.IntN(256)
				l.fill(key, make([]byte, size), false, size, exp, never, l.gen(key))
				l.get(fmt.Sprintf("k%d", rng.IntN(2000)))
			}
		})
	}
	wg.Wait()
	close(stop)
	require.NoError(t, testutil.Recv(t, checked, "the checker"))
	l.check(t, maxEntries, maxBytes)
}

func TestLocalExpiryIsLazyAndExact(t *testing.T) {
	clk := testutil.NewClock()
	l := newLocal[string](100, 1<<20, 1<<10, newClock(clk.Now))
	exp := int64(time.Second)
	l.fill("a", "A", false, 1, exp, never, l.gen("a"))
	l.fill("b", "B", false, 1, exp, never, l.gen("b"))

	clk.Advance(time.Second - time.Nanosecond)
	v, _, ok := l.get("a")
	require.True(t, ok, "one nanosecond before expiry the entry serves")
	require.Equal(t, "A", v)

	clk.Advance(time.Nanosecond)
	require.Equal(t, int64(2), l.stats().entries, "nothing removes entries behind the caller's back")
	_, _, ok = l.get("a")
	require.False(t, ok, "at its expiry the entry is gone")
	st := l.stats()
	require.Equal(t, int64(1), st.entries, "the read removed it")
	require.Equal(t, uint64(1), st.expirations)

	// An entry that arrives expired is not kept.
	l.fill("c", "C", false, 1, l.clock(), never, l.gen("c"))
	_, _, ok = l.get("c")
	require.False(t, ok)
}

func TestLocalKeepsHotKeysThroughAScan(t *testing.T) {
	l := newLocal[int](100, 1<<20, 64, newClock(nil))
	exp := int64(time.Hour)
	put := func(k string) { l.fill(k, 1, false, 8, exp, never, l.gen(k)) }
	for i := range 50 {
		put(fmt.Sprintf("hot%d", i))
	}
	for round := range 20 {
		for i := range 50 {
			_, _, ok := l.get(fmt.Sprintf("hot%d", i))
			require.True(t, ok, "round %d: hot%d was evicted", round, i)
		}
		for i := range 100 { // one-hit wonders, twice the tier's size per round
			put(fmt.Sprintf("scan%d-%d", round, i))
		}
	}
	l.check(t, 100, 1<<20)
}

func TestLocalGenerationStopsStaleFills(t *testing.T) {
	clk := testutil.NewClock()
	l := newLocal[string](100, 1<<20, 64, newClock(clk.Now))
	exp := int64(time.Hour)

	// A read that started before an invalidation does not store what it read.
	g := l.gen("k")
	l.drop("k")
	l.fill("k", "old", false, 3, exp, never, g)
	_, _, ok := l.get("k")
	require.False(t, ok)

	// A write that raced another write drops the key instead of guessing.
	l.store("k", "v1", false, 2, exp, never, l.gen("k"))
	g = l.gen("k")
	l.store("k", "v2", false, 2, exp, never, l.gen("k"))
	l.store("k", "v3", false, 2, exp, never, g)
	_, _, ok = l.get("k")
	require.False(t, ok)

	// A read racing a write leaves the write's value.
	g = l.gen("k")
	l.store("k", "new", false, 3, exp, never, l.gen("k"))
	l.fill("k", "old", false, 3, exp, never, g)
	v, _, ok := l.get("k")
	require.True(t, ok)
	require.Equal(t, "new", v)

	// A value too big for its shard is not kept, and the old copy goes.
	l.store("k", "huge", false, 2<<20, exp, never, l.gen("k"))
	_, _, ok = l.get("k")
	require.False(t, ok)
}

func TestLocalFlush(t *testing.T) {
	l := newLocal[int](1000, 1<<20, 64, newClock(nil))
	exp := int64(time.Hour)
	gens := make([]uint64, 50)
	for i := range 50 {
		k := fmt.Sprint(i)
		gens[i] = l.gen(k)
		l.fill(k, i, false, 8, exp, never, gens[i])
	}
	l.flush()
	st := l.stats()
	require.Zero(t, st.entries)
	require.Zero(t, st.bytes)
	for i := range 50 {
		k := fmt.Sprint(i)
		_, _, ok := l.get(k)
		require.False(t, ok)
		l.fill(k, i, false, 8, exp, never, gens[i]) // read before the flush: refused
	}
	require.Zero(t, l.stats().entries)
	l.check(t, 1000, 1<<20)
}

func TestShardCount(t *testing.T) {
	require.Equal(t, 1, shardCount(10, 1<<30, 1<<20))
	require.Equal(t, 1, shardCount(1_000_000, 1<<20, 1<<20), "a shard must hold the largest value")
	n := shardCount(DefaultMaxEntries, DefaultMaxBytes, DefaultMaxValueBytes)
	require.GreaterOrEqual(t, n, 1)
	require.LessOrEqual(t, n, maxShards)
	require.Zero(t, n&(n-1), "a power of two")
}

// An empty cache costs about nothing whatever its bounds: the ghost queue
// grows with use instead of being allocated for MaxEntries up front (364 MiB
// for MaxEntries 10,000,000 before; issue 14, also check).
func TestEmptyCacheAllocatesLazily(t *testing.T) {
	_, p := miniPool(t)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := newCache(t, p, "huge", Config[string]{MaxEntries: 10_000_000, MaxBytes: 1 << 40})
	runtime.ReadMemStats(&after)
	t.Logf("New with MaxEntries 10,000,000 allocated %d bytes", after.TotalAlloc-before.TotalAlloc)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "an empty cache allocated its bounds up front")
	runtime.KeepAlive(c)
}

// The ghost queue remembers the last n hashes as it grows, and as a ring
// once full.
func TestGhostRemembersTheLastN(t *testing.T) {
	var g ghost
	g.init(3)
	for h := range uint64(5) {
		g.add(h)
	}
	for h := range uint64(5) {
		require.Equal(t, h >= 2, g.contains(h), "hash %d", h)
	}
	g.add(4) // counted twice now
	g.add(5)
	g.add(6)
	require.True(t, g.contains(4), "the newer copy of 4 is still in the ring")
	require.False(t, g.contains(3))
	g.add(7)
	require.False(t, g.contains(4))
	require.LessOrEqual(t, len(g.set), 3)
}
