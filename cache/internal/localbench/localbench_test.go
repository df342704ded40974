package localbench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/maypok86/otter/v2"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/pool"
)

type item struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Score int64  `json:"score"`
}

// timed is what an otter-backed tier would have to store: otter's own
// expiry starts a goroutine nobody owns (see TestOtterStartsGoroutines),
// so the expiry travels with the value and is checked on read.
type timed struct {
	v       item
	expires int64
}

const (
	keys       = 1024
	maxEntries = 10_000
	maxBytes   = 64 << 20
)

var keyNames = func() []string {
	k := make([]string, keys)
	for i := range k {
		k[i] = fmt.Sprintf("key:%04d", i)
	}
	return k
}()

// newOtter builds otter as the tier would need it: a synchronous executor
// (the default one starts a goroutine per maintenance run), and both bounds
// through the weight (weight = max(bytes, maxBytes/maxEntries), so neither
// the bytes nor the entry count can pass its limit once maintenance ran).
func newOtter() *otter.Cache[string, timed] {
	return otter.Must(&otter.Options[string, timed]{
		MaximumWeight: maxBytes,
		Weigher: func(k string, v timed) uint32 {
			return uint32(max(len(k)+40, maxBytes/maxEntries))
		},
		Executor: func(fn func()) { fn() },
	})
}

func BenchmarkLocalHit(b *testing.B) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	c, err := cache.New(p, "bench", cache.Config[item]{})
	if err != nil {
		b.Fatal(err)
	}
	o := newOtter()
	base := time.Now()
	ctx := context.Background()
	for i, k := range keyNames {
		v := item{ID: i, Name: "name", Score: int64(i)}
		if err := c.Set(ctx, k, v, time.Hour); err != nil {
			b.Fatal(err)
		}
		o.Set(k, timed{v: v, expires: int64(time.Hour)})
	}
	var hits atomic.Uint64
	otterTier := func(k string) bool {
		e, ok := o.GetIfPresent(k)
		if !ok || int64(time.Since(base)) >= e.expires {
			return false
		}
		hits.Add(1)
		return true
	}
	run := func(name string, get func(k string) bool) {
		b.Run(name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if !get(keyNames[i&(keys-1)]) {
					b.Fatal("miss")
				}
				i++
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			var seed atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(seed.Add(7919))
				for pb.Next() {
					if !get(keyNames[i&(keys-1)]) {
						b.Fatal("miss")
					}
					i++
				}
			})
		})
	}
	run("bounded-cache.Get", func(k string) bool { _, err := c.Get(ctx, k); return err == nil })
	run("otter-GetIfPresent", func(k string) bool { _, ok := o.GetIfPresent(k); return ok })
	run("otter-as-tier", otterTier)
}

// TestOtterStartsGoroutines records why otter's own expiry is not used: a
// cache with an ExpiryCalculator starts a clean-up goroutine that nothing
// stops (it ends only after the cache is garbage collected), and the default
// executor starts one per maintenance run.
func TestOtterStartsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	c := otter.Must(&otter.Options[string, int]{
		MaximumSize:      100,
		ExpiryCalculator: otter.ExpiryWriting[string, int](time.Minute),
	})
	c.Set("k", 1)
	if after := runtime.NumGoroutine(); after <= before {
		t.Fatalf("expected otter to start a goroutine: %d before, %d after", before, after)
	}
	runtime.KeepAlive(c)
}

// TestOtterBoundUnderConcurrentWrites measures how far past MaximumSize
// otter's size runs while writers race its buffered maintenance (the tier
// in package cache never exceeds its bounds; see its tests).
func TestOtterBoundUnderConcurrentWrites(t *testing.T) {
	const limit = 300
	c := otter.Must(&otter.Options[string, int]{MaximumSize: limit, Executor: func(fn func()) { fn() }})
	var peak atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 20_000 {
				c.Set(fmt.Sprintf("%d-%d", w, i), i)
				if n := int64(c.EstimatedSize()); n > peak.Load() {
					peak.Store(n)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("otter MaximumSize %d: peak EstimatedSize %d under 4 concurrent writers", limit, peak.Load())
}
