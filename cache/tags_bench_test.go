package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkSetTags measures Set with one tag (the write script) against Set
// without (a pipeline) in the same run, on a real server: 1,024 keys in one
// tag, and with a tag kept full (Config.MaxTagMembers 100), so every write
// of a key not in it also evicts and deletes one.
func BenchmarkSetTags(b *testing.B) {
	srv := redistest.Server(b)
	p := newPool(b, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	v := item{ID: 1, Name: "name"}
	run := func(name string, c *Cache[item], opts ...Option) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := c.Set(ctx, benchKey(i), v, time.Hour, opts...); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
	c := newCache(b, p, "settags", Config[item]{})
	run("reference-untagged", c)
	run("1tag", c, Tags("user:42"))
	run("1tag-full", newCache(b, p, "settagsfull", Config[item]{MaxTagMembers: 100}), Tags("user:42"))
}

// BenchmarkInvalidateTag measures InvalidateTag of a tag of 1,000 keys
// (four chunks), per key removed, against Delete of the same 1,000 keys in
// one call.
func BenchmarkInvalidateTag(b *testing.B) {
	srv := redistest.Server(b)
	p := newPool(b, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	c := newCache(b, p, "invtag", Config[string]{})
	const n = 1000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	fill := func(b *testing.B) {
		b.StopTimer()
		for _, k := range keys {
			if err := c.Set(ctx, k, "v", time.Hour, Tags("t")); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.Run("InvalidateTag", func(b *testing.B) {
		for b.Loop() {
			fill(b)
			if err := c.InvalidateTag(ctx, "t"); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
	b.Run("reference-Delete", func(b *testing.B) {
		for b.Loop() {
			fill(b)
			if err := c.Delete(ctx, keys...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
}
