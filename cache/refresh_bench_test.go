package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/hist"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkRefreshAhead reads one hot key at 10,000 reads/s (8 readers, 2
// per instance, one read every 800µs each) from 4 instances on a real
// server, with a 200ms TTL and a 5ms loader, and reports the read latency
// quantiles, loader calls per second and the reads that waited for a
// loader: "off" without refresh-ahead (every expiry makes the reads of the
// next ~5ms wait), "on" with RefreshAfter 100ms, in the same run. Paced
// rather than flat out, so that reads stuck behind a load are not hidden
// by the readers being stuck too. Run with -benchtime=20000x (2s each).
func BenchmarkRefreshAhead(b *testing.B) {
	srv := redistest.Server(b)
	const instances, readers, every = 4, 8, 800 * time.Microsecond
	const ttl, loadTime = 200 * time.Millisecond, 5 * time.Millisecond
	for _, tc := range []struct {
		name         string
		refreshAfter time.Duration
	}{{"off", 0}, {"on", ttl / 2}} {
		b.Run(tc.name, func(b *testing.B) {
			g := lifecycle.New()
			defer func() { _ = g.Close(context.Background()) }()
			caches := make([]*Cache[item], instances)
			name := fmt.Sprintf("ra-%s-%d", tc.name, b.N)
			for i := range caches {
				p := newPool(b, pool.Config{Addrs: []string{srv.Addr()}})
				caches[i] = newCache(b, p, name, Config[item]{TTL: ttl, RefreshAfter: tc.refreshAfter})
				if err := caches[i].Start(g); err != nil {
					b.Fatal(err)
				}
			}
			testutil.Eventually(b, testutil.Wait, "subscribers", func() bool {
				for _, c := range caches {
					if !c.Stats().Subscribed {
						return false
					}
				}
				return true
			})
			ctx := context.Background()
			var loads atomic.Int64
			load := func(ctx context.Context) (item, error) {
				loads.Add(1)
				t := time.NewTimer(loadTime) // a database round trip
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
				}
				return item{ID: 1}, nil
			}
			if _, err := caches[0].GetOrLoad(ctx, "hot", load); err != nil {
				b.Fatal(err)
			}
			waitsBefore := uint64(0)
			for _, c := range caches {
				waitsBefore += c.Stats().LoaderWaits
			}
			loadsBefore := loads.Load()
			var h hist.Histogram
			per := max(b.N/readers, 1)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for r := range readers {
				c := caches[r%instances]
				wg.Go(func() {
					tick := time.NewTicker(every)
					defer tick.Stop()
					for range per {
						<-tick.C
						t0 := time.Now()
						if _, err := c.GetOrLoad(ctx, "hot", load); err != nil {
							b.Error(err)
							return
						}
						h.Observe(time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			var waits uint64
			for _, c := range caches {
				waits += c.Stats().LoaderWaits
			}
			us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
			b.ReportMetric(us(h.Quantile(0.5)), "p50-µs")
			b.ReportMetric(us(h.Quantile(0.99)), "p99-µs")
			b.ReportMetric(us(h.Quantile(0.999)), "p99.9-µs")
			b.ReportMetric(float64(loads.Load()-loadsBefore)/elapsed.Seconds(), "loads/s")
			b.ReportMetric(float64(waits-waitsBefore), "loader-waits")
			b.ReportMetric(float64(h.Count())/elapsed.Seconds(), "reads/s")
		})
	}
}
