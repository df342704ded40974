package cache

import (
	"context"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkSingleKeyHit measures the single-key local-hit paths (Get and
// GetOrLoad, refresh-ahead off), to compare against older commits.
func BenchmarkSingleKeyHit(b *testing.B) {
	m := redistest.Mini(b)
	p := newPool(b, pool.Config{Addrs: []string{m.Addr()}})
	c := newCache(b, p, "bench", Config[item]{})
	ctx := context.Background()
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = benchKey(i)
		if err := c.Set(ctx, keys[i], item{ID: i, Name: "name"}, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	load := func(context.Context) (item, error) { return item{}, nil }
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if v, err := c.Get(ctx, keys[i&(benchKeys-1)]); err != nil || v.Name != "name" {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("GetOrLoad", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if v, err := c.GetOrLoad(ctx, keys[i&(benchKeys-1)], load); err != nil || v.Name != "name" {
				b.Fatal("miss")
			}
			i++
		}
	})
}
