package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
)

// BenchmarkSemaphore is TryAcquire and release (two scripts, two round
// trips) on a real server, one caller at a time (latency) and many at once
// (throughput), against a PING through the same pool in the same run: the
// reference round trip. round-trips/op is the op's time in PINGs of the
// same mode; redis-µs/op the Redis CPU of the op (INFO commandstats).
func BenchmarkSemaphore(b *testing.B) {
	srv := redistest.Server(b)
	p := benchPool(b, srv)
	ctx := context.Background()
	s, err := NewSemaphore(p, "bench", SemaphoreConfig{Limit: MaxSemaphoreLimit, LeaseTTL: time.Minute, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	g := lifecycle.New()
	if err := s.Start(g); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = g.Close(context.Background()) })
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprint("tenant:", i)
	}
	op := func(i int) error {
		release, err := s.TryAcquire(ctx, keys[i%len(keys)])
		if err != nil {
			return err
		}
		release()
		return nil
	}
	ping := func(int) error { return p.Client().Ping(ctx).Err() }
	for _, mode := range []string{"serial", "parallel"} {
		var pingNs float64
		for _, c := range []struct {
			name string
			op   func(i int) error
		}{{"ping", ping}, {"acquire-release", op}} {
			b.Run(mode+"/"+c.name, func(b *testing.B) {
				resetStats(b, srv)
				b.ReportAllocs()
				if mode == "serial" {
					i := 0
					for b.Loop() {
						i++
						if err := c.op(i); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism(parallelism)
					b.RunParallel(func(pb *testing.PB) {
						i := 0
						for pb.Next() {
							i++
							if err := c.op(i); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
				if c.name == "ping" {
					pingNs = ns
					b.ReportMetric(usecPerCall(b, srv, "ping"), "redis-µs/op")
					return
				}
				b.ReportMetric(2*usecPerCall(b, srv, "evalsha"), "redis-µs/op")
				if pingNs > 0 {
					b.ReportMetric(ns/pingNs, "round-trips/op")
				}
			})
		}
	}
}
