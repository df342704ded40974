package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
)

// BenchmarkAllowWindows is the cost of several windows at once against one,
// in the same run, every call admitted by Redis over 10,000 keys: Allow on
// the Limiter's own limit (the reference), AllowLimits with one limit given
// per call (gcraScript with per-call arguments) and with two windows (a
// second's and a day's: windowsScript, two GETs and two SETs). redis-µs/op
// is INFO commandstats' usec_per_call of evalsha: the Redis CPU per call.
func BenchmarkAllowWindows(b *testing.B) {
	srv := redistest.Server(b)
	p := benchPool(b, srv)
	ctx := context.Background()
	const huge = 1_000_000_000
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprint("user:", i)
	}
	second := Limit{Rate: huge, Period: time.Second}
	day := Limit{Rate: huge, Period: 24 * time.Hour}
	for _, c := range []struct {
		name  string
		allow func(l *Limiter, key string) (Result, error)
	}{
		{"allow", func(l *Limiter, key string) (Result, error) { return l.Allow(ctx, key) }},
		{"one-window", func(l *Limiter, key string) (Result, error) { return l.AllowLimits(ctx, key, 1, second) }},
		{"two-windows", func(l *Limiter, key string) (Result, error) { return l.AllowLimits(ctx, key, 1, second, day) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			l := benchLimiter(b, p, "bench-windows-"+c.name, Config{Rate: huge})
			resetStats(b, srv)
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1) * 7919)
				for pb.Next() {
					i++
					if err := allowed(c.allow(l, keys[i%len(keys)])); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			b.ReportMetric(usecPerCall(b, srv, "evalsha"), "redis-µs/op")
		})
	}
}
