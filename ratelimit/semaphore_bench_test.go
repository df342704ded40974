package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
)

// BenchmarkSemaphore is TryAcquire and release (two scripts, two round
// trips) on a real server against a PING through the same pool, the
// reference round trip. Every iteration does both, one after the other, so
// that the reference sees the same load as what it is compared with (the
// machine is shared): one caller at a time (serial) and 8 per core
// (parallel). Reported: the mean time of each (ping-µs, acquire-release-µs),
// their ratio (round-trips/op: the op's time in PINGs), and the Redis CPU
// of an acquire+release (redis-µs/op, INFO commandstats, both scripts).
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
	var pingNs, opNs atomic.Int64
	step := func(i int) error {
		t0 := time.Now()
		if err := p.Client().Ping(ctx).Err(); err != nil {
			return err
		}
		t1 := time.Now()
		release, err := s.TryAcquire(ctx, keys[i%len(keys)])
		if err != nil {
			return err
		}
		release()
		pingNs.Add(int64(t1.Sub(t0)))
		opNs.Add(int64(time.Since(t1)))
		return nil
	}
	for _, mode := range []string{"serial", "parallel"} {
		b.Run(mode, func(b *testing.B) {
			resetStats(b, srv)
			pingNs.Store(0)
			opNs.Store(0)
			if mode == "serial" {
				i := 0
				for b.Loop() {
					i++
					if err := step(i); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				var next atomic.Int64
				b.SetParallelism(parallelism)
				b.RunParallel(func(pb *testing.PB) {
					i := int(next.Add(1) * 7919)
					for pb.Next() {
						i++
						if err := step(i); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			n := float64(b.N)
			b.ReportMetric(float64(pingNs.Load())/n/1e3, "ping-µs")
			b.ReportMetric(float64(opNs.Load())/n/1e3, "acquire-release-µs")
			b.ReportMetric(float64(opNs.Load())/float64(pingNs.Load()), "round-trips/op")
			b.ReportMetric(2*usecPerCall(b, srv, "evalsha"), "redis-µs/op")
		})
	}
}
