package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

func put(e *expiring[int], key string, exp int64, val int, now int64) {
	s := e.shard(key)
	s.mu.Lock()
	s.set(key, exp, val, now)
	s.mu.Unlock()
}

func get(e *expiring[int], key string, now int64) (int, bool) {
	s := e.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if it := s.get(key, now); it != nil {
		return it.val, true
	}
	return 0, false
}

func TestExpiringLazyExpiry(t *testing.T) {
	e := newExpiring[int](4)
	put(e, "a", 10, 1, 0)
	v, ok := get(e, "a", 9)
	require.True(t, ok)
	require.Equal(t, 1, v)
	_, ok = get(e, "a", 10)
	require.False(t, ok, "an entry ends at its instant")
	require.Zero(t, e.len(), "and is dropped when found expired")

	put(e, "a", 10, 1, 0)
	put(e, "a", 30, 2, 5) // update in place: new value and instant
	v, ok = get(e, "a", 20)
	require.True(t, ok)
	require.Equal(t, 2, v)
	require.Equal(t, 1, e.len())
}

// TestExpiringEvictsClosestToExpiry: a full map drops an expired entry if it
// has one, else the one that would expire soonest.
func TestExpiringEvictsClosestToExpiry(t *testing.T) {
	e := newExpiring[int](3)
	put(e, "late", 100, 0, 0)
	put(e, "soon", 20, 0, 0)
	put(e, "mid", 50, 0, 0)
	put(e, "new", 70, 0, 0) // full: "soon" goes
	_, ok := get(e, "soon", 0)
	require.False(t, ok)
	require.Equal(t, uint64(1), e.evictions())

	put(e, "newer", 80, 0, 60) // "mid" (50) has expired at 60: dropped, not counted as an eviction
	_, ok = get(e, "mid", 0)
	require.False(t, ok)
	require.Equal(t, uint64(1), e.evictions())
	for _, k := range []string{"late", "new", "newer"} {
		_, ok := get(e, k, 60)
		require.True(t, ok, k)
	}
	require.Equal(t, 3, e.len())

	zero := newExpiring[int](0)
	put(zero, "a", 10, 0, 0)
	require.Zero(t, zero.len(), "capacity zero holds nothing")
}

// TestExpiringBoundAndHeap drives random sets, gets and expiries against a
// reference and checks the bound and the heap's order after each.
func TestExpiringBoundAndHeap(t *testing.T) {
	for _, capacity := range []int{1, 7, 100, shardedFrom, 3000} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			e := newExpiring[int](capacity)
			require.Equal(t, capacity, shardCaps(e))
			rng := rand.New(rand.NewPCG(7, uint64(capacity)))
			now := int64(0)
			for i := range 20_000 {
				now += rng.Int64N(3)
				key := fmt.Sprint(rng.IntN(3 * capacity))
				if rng.IntN(3) == 0 {
					if v, ok := get(e, key, now); ok {
						require.Equal(t, len(key), v)
					}
					continue
				}
				put(e, key, now+1+rng.Int64N(50), len(key), now)
				if i%97 == 0 || capacity < 10 {
					require.LessOrEqual(t, e.len(), capacity)
					checkHeaps(t, e)
				}
			}
		})
	}
}

func checkHeaps[V any](t *testing.T, e *expiring[V]) {
	for i := range e.shards {
		s := &e.shards[i]
		require.Len(t, s.heap, len(s.items))
		require.LessOrEqual(t, len(s.items), s.cap)
		for j, it := range s.heap {
			require.Equal(t, j, it.idx)
			require.Same(t, it, s.items[it.key])
			if j > 0 {
				require.LessOrEqual(t, s.heap[(j-1)/2].exp, it.exp, "heap order")
			}
		}
	}
}

// TestHotDeniedKeyCostsNoCommand: once Redis has denied a key, it is
// answered locally, with the RetryAfter Redis would give, until that passes.
func TestHotDeniedKeyCostsNoCommand(t *testing.T) { onBoth(t, testHotDeniedKeyCostsNoCommand) }

func testHotDeniedKeyCostsNoCommand(t *testing.T, b backend) {
	p := b.newPool(t)
	clk := testutil.NewClock()
	cfg := Config{Rate: 7, Period: 90 * time.Second, Burst: 3, Now: clk.Now}
	l := newLimiter(t, p, "hot", cfg)
	cfg.NoDeniedCache = true
	ref := newLimiter(t, p, "hot", cfg) // same name, same state, always asks Redis
	keepState(t, l)
	keepState(t, ref)
	ctx := context.Background()
	r, err := l.AllowN(ctx, "k", 3)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	r, err = l.Allow(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, SourceRedis, r.Source)
	require.Equal(t, us(12_857_143), r.RetryAfter)

	// Along the denial, the cache answers what Redis answers, for 1 and n.
	for _, at := range []int64{0, 1, 5_000_000, 12_857_142} {
		clk.Set(t0.Add(us(at)))
		for n := 1; n <= 3; n++ {
			before := b.commands(t)
			got, err := l.AllowN(ctx, "k", n)
			require.NoError(t, err)
			require.Equal(t, before, b.commands(t), "the cache asked Redis at +%dµs", at)
			require.Equal(t, SourceDeniedCache, got.Source)
			want, err := ref.AllowN(ctx, "k", n)
			require.NoError(t, err)
			require.False(t, want.Allowed)
			want.Source = SourceDeniedCache
			require.Equal(t, want, got, "+%dµs n=%d", at, n)
		}
	}

	// A thousand calls while denied: no command at all.
	before := b.commands(t)
	for range 1000 {
		r, err := l.Allow(ctx, "k")
		require.NoError(t, err)
		require.False(t, r.Allowed)
	}
	require.Equal(t, before, b.commands(t))

	// When RetryAfter has passed, Redis is asked again and admits.
	clk.Set(t0.Add(us(12_857_143)))
	r, err = l.Allow(ctx, "k")
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, SourceRedis, r.Source)
	require.Equal(t, uint64(4*3+1000), l.Stats().DeniedCache)
}

// TestDeniedCacheBounded: however many keys are denied, the cache holds at
// most Config.DeniedKeys, dropping those closest to expiry, and a key it
// dropped is simply asked of Redis again.
func TestDeniedCacheBounded(t *testing.T) {
	_, p := mini(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "bounded", Config{Rate: 1, Period: time.Minute, DeniedKeys: 8, Now: clk.Now})
	ctx := context.Background()
	for i := range 100 {
		clk.Advance(time.Millisecond) // later keys are denied until later
		key := fmt.Sprint("k", i)
		for range 2 {
			_, err := l.Allow(ctx, key)
			require.NoError(t, err)
		}
		require.LessOrEqual(t, l.Stats().DeniedKeys, 8)
	}
	s := l.Stats()
	require.Equal(t, 8, s.DeniedKeys)
	require.Equal(t, uint64(92), s.DeniedEvictions)
	var kept []string
	for key := range l.denied.shards[0].items {
		kept = append(kept, key)
	}
	slices.Sort(kept)
	require.Equal(t, []string{"k92", "k93", "k94", "k95", "k96", "k97", "k98", "k99"}, kept, "the latest to expire are kept")

	calls := s.RedisCalls
	r, err := l.Allow(ctx, "k0")
	require.NoError(t, err)
	require.False(t, r.Allowed)
	require.Equal(t, SourceRedis, r.Source, "an evicted key is asked of Redis")
	require.Equal(t, calls+1, l.Stats().RedisCalls)
}

// TestDeniedCacheNotForPartialDenial: AllowN denied for n but not for 1
// is not cached: a single event must still reach Redis and pass.
func TestDeniedCacheNotForPartialDenial(t *testing.T) {
	_, p := mini(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "partial", Config{Rate: 10, Now: clk.Now})
	ctx := context.Background()
	_, err := l.AllowN(ctx, "k", 8)
	require.NoError(t, err)
	r, err := l.AllowN(ctx, "k", 5)
	require.NoError(t, err)
	require.False(t, r.Allowed)
	require.Equal(t, 2, r.Remaining)
	require.Zero(t, l.Stats().DeniedKeys)
	r, err = l.AllowN(ctx, "k", 2)
	require.NoError(t, err)
	require.True(t, r.Allowed)
}

// TestDeniedCacheConcurrent hammers one limiter from many goroutines on a
// few keys (run with -race); the cache never admits, so admissions stay
// within the burst at a fixed instant.
func TestDeniedCacheConcurrent(t *testing.T) {
	_, p := mini(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "concurrent", Config{Rate: 5, Now: clk.Now, DeniedKeys: 2})
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := map[string]int{}
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				key := fmt.Sprint("k", (g+i)%4)
				r, err := l.Allow(context.Background(), key)
				if err != nil {
					t.Error(err)
					return
				}
				if r.Allowed {
					mu.Lock()
					admitted[key]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, map[string]int{"k0": 5, "k1": 5, "k2": 5, "k3": 5}, admitted)
	require.LessOrEqual(t, l.Stats().DeniedKeys, 2)
	require.Equal(t, uint64(400-20), l.Stats().Denied)
}
