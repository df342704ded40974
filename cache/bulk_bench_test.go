package cache

import (
	"context"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkGetMany reads 100 keys from Redis (a real server, local tier
// off) with one GetMany against 100 Gets in the same run; both report
// µs per 100 keys.
func BenchmarkGetMany(b *testing.B) {
	srv := redistest.Server(b)
	p := newPool(b, pool.Config{Addrs: []string{srv.Addr()}})
	c := newCache(b, p, "bulkbench", Config[item]{NoLocal: true})
	ctx := context.Background()
	keys := keysN("key:", 100)
	values := make(map[string]item, len(keys))
	for i, k := range keys {
		values[k] = item{ID: i, Name: "name", Score: int64(i)}
	}
	if err := c.SetMany(ctx, values, time.Hour); err != nil {
		b.Fatal(err)
	}
	per100 := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/100keys")
	}
	b.Run("GetMany-100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			got, err := c.GetMany(ctx, keys)
			if err != nil || len(got) != len(keys) {
				b.Fatal(len(got), err)
			}
		}
		per100(b)
	})
	b.Run("reference-100-Gets", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, k := range keys {
				if _, err := c.Get(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
		}
		per100(b)
	})
}
