package cache

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// check verifies the tier's bookkeeping against its contents and its bounds.
func (l *local[V]) check(t testing.TB, maxEntries int, maxBytes int64) {
	t.Helper()
	var entries, bytes int64
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		var n, b, sn, sb int64
		for _, q := range []*list[V]{&s.small, &s.main} {
			c := 0
			for e := q.head; e != nil; e = e.next {
				require.Same(t, e, s.m[e.key], "queued entry %q is the map's", e.key)
				require.Equal(t, q == &s.main, e.inMain)
				n++
				b += e.weight
				if q == &s.small {
					sn++
					sb += e.weight
				}
				c++
			}
			require.Equal(t, q.len, c)
		}
		require.Equal(t, int64(len(s.m)), n, "every entry is queued once")
		require.Equal(t, s.entries, n)
		require.Equal(t, s.bytes, b)
		require.Equal(t, s.smallEntries, sn)
		require.Equal(t, s.smallBytes, sb)
		require.LessOrEqual(t, s.entries, s.maxEntries)
		require.LessOrEqual(t, s.bytes, s.maxBytes)
		entries += n
		bytes += b
		s.mu.RUnlock()
	}
	require.LessOrEqual(t, entries, int64(maxEntries))
	require.LessOrEqual(t, bytes, maxBytes)
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
			clk := newFakeClock()
			l := newLocal[[]byte](tc.maxEntries, tc.maxBytes, 512, newClock(clk.Now))
			rng := rand.New(rand.NewPCG(1, 2))
			exp := int64(time.Hour)
			for i := range 20_000 {
				key := fmt.Sprintf("k%d", rng.IntN(3000))
				switch op := rng.IntN(10); {
				case op < 5:
					size := rng.IntN(512)
					l.fill(key, make([]byte, size), false, size, exp, l.gen(key))
				case op < 6:
					size := rng.IntN(512)
					l.store(key, make([]byte, size), false, size, exp, l.gen(key))
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
	var checker sync.WaitGroup
	checker.Go(func() {
		for {
			// Each shard is checked under its lock, between writes.
			l.check(t, maxEntries, maxBytes)
			select {
			case <-stop:
				return
			default:
			}
		}
	})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range 5000 {
				key := fmt.Sprintf("k%d", rng.IntN(2000))
				size := rng.IntN(256)
				l.fill(key, make([]byte, size), false, size, exp, l.gen(key))
				l.get(fmt.Sprintf("k%d", rng.IntN(2000)))
			}
		})
	}
	wg.Wait()
	close(stop)
	checker.Wait()
	l.check(t, maxEntries, maxBytes)
}

func TestLocalExpiryIsLazyAndExact(t *testing.T) {
	clk := newFakeClock()
	l := newLocal[string](100, 1<<20, 1<<10, newClock(clk.Now))
	exp := int64(time.Second)
	l.fill("a", "A", false, 1, exp, l.gen("a"))
	l.fill("b", "B", false, 1, exp, l.gen("b"))

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
	l.fill("c", "C", false, 1, l.clock(), l.gen("c"))
	_, _, ok = l.get("c")
	require.False(t, ok)
}

func TestLocalKeepsHotKeysThroughAScan(t *testing.T) {
	l := newLocal[int](100, 1<<20, 64, newClock(nil))
	exp := int64(time.Hour)
	put := func(k string) { l.fill(k, 1, false, 8, exp, l.gen(k)) }
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
	clk := newFakeClock()
	l := newLocal[string](100, 1<<20, 64, newClock(clk.Now))
	exp := int64(time.Hour)

	// A read that started before an invalidation does not store what it read.
	g := l.gen("k")
	l.drop("k")
	l.fill("k", "old", false, 3, exp, g)
	_, _, ok := l.get("k")
	require.False(t, ok)

	// A write that raced another write drops the key instead of guessing.
	l.store("k", "v1", false, 2, exp, l.gen("k"))
	g = l.gen("k")
	l.store("k", "v2", false, 2, exp, l.gen("k"))
	l.store("k", "v3", false, 2, exp, g)
	_, _, ok = l.get("k")
	require.False(t, ok)

	// A read racing a write leaves the write's value.
	g = l.gen("k")
	l.store("k", "new", false, 3, exp, l.gen("k"))
	l.fill("k", "old", false, 3, exp, g)
	v, _, ok := l.get("k")
	require.True(t, ok)
	require.Equal(t, "new", v)

	// A value too big for its shard is not kept, and the old copy goes.
	l.store("k", "huge", false, 2<<20, exp, l.gen("k"))
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
		l.fill(k, i, false, 8, exp, gens[i])
	}
	l.flush()
	st := l.stats()
	require.Zero(t, st.entries)
	require.Zero(t, st.bytes)
	for i := range 50 {
		k := fmt.Sprint(i)
		_, _, ok := l.get(k)
		require.False(t, ok)
		l.fill(k, i, false, 8, exp, gens[i]) // read before the flush: refused
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
