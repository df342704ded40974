package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/redistest"
)

// BenchmarkStarvation measures GET latency next to 30 goroutines looping
// BLMOVE with a 1s timeout, the post-mortem's shape, for a naive shared
// go-redis client (PoolSize 20) and for a Pool (request lane 20, blocking
// work in its own lane), on the same server in the same run.
func BenchmarkStarvation(b *testing.B) {
	srv := redistest.Server(b)
	b.Run("naive-shared-client", func(b *testing.B) {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 20})
		defer c.Close()
		starvationRun(b, c, c)
	})
	b.Run("pool", func(b *testing.B) {
		p, err := New(Config{Addrs: []string{srv.Addr()}, Request: LaneConfig{Size: 20}, Blocking: BlockingConfig{Size: 30}})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		r, err := p.ReserveBlocking("30 blocking consumers", 30)
		if err != nil {
			b.Fatal(err)
		}
		starvationRun(b, p.Client(), r.Client())
	})
}

func starvationRun(b *testing.B, getc, blockc redis.UniversalClient) {
	ctx, cancel := context.WithCancel(context.Background())
	if err := getc.Set(ctx, "k", "v", 0).Err(); err != nil {
		b.Fatal(err)
	}
	var blockers sync.WaitGroup
	var started atomic.Int32
	for i := range 30 {
		blockers.Go(func() {
			key := fmt.Sprintf("empty:%d", i)
			started.Add(1)
			for ctx.Err() == nil {
				_ = blockc.BLMove(ctx, key, key+":p", "RIGHT", "LEFT", time.Second).Err()
			}
		})
	}
	for started.Load() < 30 {
		time.Sleep(time.Millisecond) // let the blockers take their connections first
	}
	time.Sleep(20 * time.Millisecond)

	const loops = 20
	per := max(b.N/loops, 2)
	lat := make([][]time.Duration, loops)
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range loops {
		wg.Go(func() {
			lat[i] = make([]time.Duration, 0, per)
			for range per {
				t0 := time.Now()
				err := getc.Get(ctx, "k").Err()
				lat[i] = append(lat[i], time.Since(t0))
				if err != nil && !errors.Is(err, context.Canceled) {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	blockers.Wait()

	all := slices.Concat(lat...)
	slices.Sort(all)
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))]) / 1e6 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "gets/s")
	b.ReportMetric(float64(failed.Load()), "failed")
}

// BenchmarkRequestLaneGet is the cost of the lane's gate and health check on
// a GET, against a bare go-redis client on the same server.
func BenchmarkRequestLaneGet(b *testing.B) {
	srv := redistest.Server(b)
	ctx := context.Background()
	bare := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 20})
	defer bare.Close()
	p, err := New(Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	if err := bare.Set(ctx, "k", "v", 0).Err(); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		c    redis.UniversalClient
	}{{"bare-go-redis", bare}, {"pool", p.Client()}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.c.Get(ctx, "k").Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkFailFast is the cost of a request-lane call while Redis is down.
func BenchmarkFailFast(b *testing.B) {
	port, err := redistest.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Config{Addrs: []string{fmt.Sprintf("127.0.0.1:%d", port)}, FailureThreshold: 1, ProbeInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	_ = p.Client().Get(ctx, "k").Err() // refused: marks Redis down
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := p.Client().Get(ctx, "k").Err(); !errors.Is(err, ErrUnavailable) {
			b.Fatal(err)
		}
	}
}

// BenchmarkClusterRequestLaneGet is BenchmarkRequestLaneGet on a 3-master
// Redis Cluster, with keys on every master: the pool's gate and hooks in
// front of a ClusterClient, against a bare ClusterClient.
func BenchmarkClusterRequestLaneGet(b *testing.B) {
	c := redistest.Cluster(b)
	ctx := context.Background()
	tags := c.OnEveryMaster(func(i int) string { return fmt.Sprint("t", i) }, func(n string) string { return "{" + n + "}" })
	keys := make([]string, len(tags))
	for i, tag := range tags {
		keys[i] = "{" + tag + "}:k"
	}
	bare := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), PoolSize: 20})
	defer bare.Close()
	p, err := New(Config{Addrs: c.Addrs(), ClusterMode: true})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	for _, k := range keys {
		if err := bare.Set(ctx, k, "v", 0).Err(); err != nil {
			b.Fatal(err)
		}
	}
	for _, cl := range []struct {
		name string
		c    redis.UniversalClient
	}{{"bare-go-redis", bare}, {"pool", p.Client()}} {
		b.Run(cl.name, func(b *testing.B) {
			b.ReportAllocs()
			var n atomic.Uint64
			b.RunParallel(func(pb *testing.PB) {
				i := int(n.Add(1))
				for pb.Next() {
					i++
					if err := cl.c.Get(ctx, keys[i%len(keys)]).Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
