package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

const benchKeys = 1024

func benchKey(i int) string { return fmt.Sprintf("key:%04d", i%benchKeys) }

// BenchmarkLocalHit measures Get answered by the local tier (a small struct,
// 1,024 keys), through the whole Cache and on the tier alone, serial and
// parallel. Target: <= 100 ns/op and 0 allocs.
func BenchmarkLocalHit(b *testing.B) {
	m := redistest.Mini(b)
	p := newPool(b, pool.Config{Addrs: []string{m.Addr()}})
	c := newCache(b, p, "bench", Config[item]{})
	ctx := context.Background()
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = benchKey(i)
		if err := c.Set(ctx, keys[i], item{ID: i, Name: "name", Score: int64(i)}, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	check := func(b *testing.B, v item, err error) {
		if err != nil || v.Name != "name" {
			b.Fatalf("not a hit: %v %v", v, err)
		}
	}
	b.Run("cache/serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			v, err := c.Get(ctx, keys[i&(benchKeys-1)])
			check(b, v, err)
			i++
		}
	})
	b.Run("cache/parallel", func(b *testing.B) {
		b.ReportAllocs()
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				v, err := c.Get(ctx, keys[i&(benchKeys-1)])
				check(b, v, err)
				i++
			}
		})
	})
	b.Run("tier/serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, _, ok := c.local.get(keys[i&(benchKeys-1)]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("tier/parallel", func(b *testing.B) {
		b.ReportAllocs()
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				if _, _, ok := c.local.get(keys[i&(benchKeys-1)]); !ok {
					b.Fatal("miss")
				}
				i++
			}
		})
	})
	// The reference: a plain map under one RWMutex, the least a shared
	// typed cache can do.
	b.Run("reference-rwmutex-map/parallel", func(b *testing.B) {
		b.ReportAllocs()
		var mu sync.RWMutex
		mp := make(map[string]item, benchKeys)
		for i, k := range keys {
			mp[k] = item{ID: i}
		}
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				mu.RLock()
				_, ok := mp[keys[i&(benchKeys-1)]]
				mu.RUnlock()
				if !ok {
					b.Fatal("miss")
				}
				i++
			}
		})
	})
}

// BenchmarkRedisHit measures Get answered by Redis (local tier off) on a
// real server, against a bare GET on the same pool in the same run.
func BenchmarkRedisHit(b *testing.B) {
	srv := redistest.Server(b)
	p := newPool(b, pool.Config{Addrs: []string{srv.Addr()}})
	c := newCache(b, p, "bench", Config[item]{NoLocal: true})
	ctx := context.Background()
	for i := range benchKeys {
		if err := c.Set(ctx, benchKey(i), item{ID: i, Name: "name"}, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("cache/serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := c.Get(ctx, benchKey(i)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("cache/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := c.Get(ctx, benchKey(i)); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run("reference-bare-GET/serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := p.Client().Get(ctx, c.RedisKey(benchKey(i))).Err(); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkStampede runs 4 instances x 100 concurrent GetOrLoad callers on a
// cold key per iteration, on a real server, and reports the loader calls and
// the lock checks (EVALSHA calls) per stampede.
func BenchmarkStampede(b *testing.B) {
	const instances, callers = 4, 100
	srv := redistest.Server(b)
	caches := make([]*Cache[item], instances)
	g := lifecycle.New()
	for i := range caches {
		caches[i] = newCache(b, newPool(b, pool.Config{Addrs: []string{srv.Addr()}}), "stampede", Config[item]{})
		if err := caches[i].Start(g); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = g.Close(context.Background()) })
	testutil.Eventually(b, testutil.Wait, "subscribers", func() bool {
		for _, c := range caches {
			if !c.Stats().Subscribed {
				return false
			}
		}
		return true
	})
	ctx := context.Background()
	before, err := srv.CommandStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var loads atomic.Int64
	n := 0
	for b.Loop() {
		key := fmt.Sprint("cold-", n)
		n++
		load := func(context.Context) (item, error) {
			loads.Add(1)
			time.Sleep(2 * time.Millisecond) // a database round trip
			return item{ID: 1}, nil
		}
		var wg sync.WaitGroup
		for _, c := range caches {
			for range callers {
				wg.Go(func() {
					if _, err := c.GetOrLoad(ctx, key, load); err != nil {
						b.Error(err)
					}
				})
			}
		}
		wg.Wait()
	}
	after, err := srv.CommandStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(loads.Load())/float64(n), "loader-calls/op")
	b.ReportMetric(float64(after["evalsha"]-before["evalsha"]+after["eval"]-before["eval"])/float64(n), "scripts/op")
}

// BenchmarkRedisDown measures calls while Redis is stopped and the pool has
// it marked down: a local hit, a Get miss (fails with ErrUnavailable) and a
// GetOrLoad miss (goes to the loader). Without the pool's fail-fast each miss
// would dial: a refused loopback dial takes ~0.1-0.5 ms, an unreachable host
// the whole DialTimeout (2 s).
func BenchmarkRedisDown(b *testing.B) {
	srv := redistest.Server(b)
	p := newPool(b, pool.Config{Addrs: []string{srv.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	c := newCache(b, p, "down", Config[item]{MaxEntries: 1 << 20, MaxBytes: 1 << 30})
	ctx := context.Background()
	if err := c.Set(ctx, "hit", item{ID: 1}, time.Hour); err != nil {
		b.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Get(ctx, "miss"); err == nil || p.Healthy() {
		b.Fatal("redis should be marked down")
	}
	b.Run("local-hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Get(ctx, "hit"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get-miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Get(ctx, "miss"); err == nil {
				b.Fatal("no error")
			}
		}
	})
	next := 0
	b.Run("getorload-miss", func(b *testing.B) {
		b.ReportAllocs()
		load := func(context.Context) (item, error) { return item{ID: 2}, nil }
		misses := c.Stats().Loads
		for b.Loop() {
			next++ // never a key loaded before, whatever runs this closure again
			if _, err := c.GetOrLoad(ctx, fmt.Sprint("l", next), load); err != nil {
				b.Fatal(err)
			}
		}
		if loads := c.Stats().Loads - misses; loads != uint64(b.N) {
			b.Fatalf("%d loads for %d misses", loads, b.N)
		}
	})
}
