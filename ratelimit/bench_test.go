package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// parallelism: goroutines per GOMAXPROCS in parallel benchmarks, enough to
// keep a loopback Redis busy within the request lane's 20 connections.
const parallelism = 8

// usecPerCall reads INFO commandstats' usec_per_call of cmd: the Redis CPU
// one call costs (for a script, the whole script).
func usecPerCall(b *testing.B, srv *redistest.Redis, cmd string) float64 {
	info, err := srv.Do(context.Background(), "INFO", "commandstats")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "usec_per_call="); ok {
				x, _ := strconv.ParseFloat(v, 64)
				return x
			}
		}
	}
	return 0
}

func resetStats(b *testing.B, srv *redistest.Redis) {
	if _, err := srv.Do(context.Background(), "CONFIG", "RESETSTAT"); err != nil {
		b.Fatal(err)
	}
}

func benchPool(b *testing.B, srv *redistest.Redis) *pool.Pool {
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

// benchLimiter builds a limiter for a benchmark, with a 10s Timeout unless
// cfg sets one: a loaded machine must not turn Redis's answers into the
// policy's (see newLimiter).
func benchLimiter(b *testing.B, p *pool.Pool, name string, cfg Config) *Limiter {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	l, err := New(p, name, cfg)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkAllow is the cost of Allow when Redis decides (every call
// admitted, so every call runs the script), on one key and spread over
// 10,000 keys, with a GET through the same pool as the reference round trip.
// redis-µs/op is INFO commandstats' usec_per_call of the run: the Redis CPU
// per call (evalsha for Allow, get for the GET).
func BenchmarkAllow(b *testing.B) {
	srv := redistest.Server(b)
	p := benchPool(b, srv)
	ctx := context.Background()
	huge := Config{Rate: 1_000_000_000, Burst: 1_000_000_000}
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprint("user:", i)
	}
	run := func(b *testing.B, cmd string, op func(i int) error) {
		resetStats(b, srv)
		var next atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1) * 7919)
			for pb.Next() {
				i++
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		b.ReportMetric(usecPerCall(b, srv, cmd), "redis-µs/op")
	}
	b.Run("get", func(b *testing.B) {
		if err := p.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
			b.Fatal(err)
		}
		run(b, "get", func(int) error { return p.Client().Get(ctx, "k").Err() })
	})
	b.Run("one-key", func(b *testing.B) {
		l := benchLimiter(b, p, "bench-one", huge)
		run(b, "evalsha", func(int) error { return allowed(l.Allow(ctx, "k")) })
	})
	b.Run("10000-keys", func(b *testing.B) {
		l := benchLimiter(b, p, "bench-many", huge)
		run(b, "evalsha", func(i int) error { return allowed(l.Allow(ctx, keys[i%len(keys)])) })
	})
}

func allowed(r Result, err error) error {
	if err != nil {
		return err
	}
	if !r.Allowed || r.Source != SourceRedis {
		return fmt.Errorf("want admitted by Redis, got %+v", r)
	}
	return nil
}

// BenchmarkHotDeniedKey is an abusive key hammering a limiter that denies
// it: answered by the denied cache, against a limiter with the cache off
// that runs the script for every call (the reference), in the same run.
// redis-calls/op shows how often each asks Redis, redis-µs/call what a
// denial costs Redis when it does (no write).
func BenchmarkHotDeniedKey(b *testing.B) {
	srv := redistest.Server(b)
	p := benchPool(b, srv)
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		noCache bool
	}{{"denied-cache", false}, {"script-per-call", true}} {
		b.Run(c.name, func(b *testing.B) {
			l := benchLimiter(b, p, "bench-hot-"+c.name, Config{Rate: 1, Period: time.Hour, NoDeniedCache: c.noCache})
			if _, err := l.Allow(ctx, "abuser"); err != nil {
				b.Fatal(err)
			}
			resetStats(b, srv)
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r, err := l.Allow(ctx, "abuser")
					if err != nil || r.Allowed {
						b.Errorf("want denied, got %+v, %v", r, err)
						return
					}
				}
			})
			b.StopTimer()
			st, err := srv.CommandStats(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "denials/s")
			b.ReportMetric(float64(st["evalsha"])/float64(b.N), "redis-calls/op")
			b.ReportMetric(usecPerCall(b, srv, "evalsha"), "redis-µs/call")
		})
	}
}

// BenchmarkRedisDown is the latency of a call while Redis is stopped and
// marked down, under each policy, on 1,000 keys.
func BenchmarkRedisDown(b *testing.B) {
	srv := redistest.Server(b)
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if err := srv.Stop(); err != nil {
		b.Fatal(err)
	}
	_ = p.Client().Ping(ctx).Err() // refused: marks Redis down
	if p.Healthy() {
		b.Fatal("pool still healthy with Redis stopped")
	}
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprint("user:", i)
	}
	for _, policy := range []Policy{FailOpen, FailClosed, FailLocal} {
		b.Run(policy.String(), func(b *testing.B) {
			l := benchLimiter(b, p, "bench-down", Config{Rate: 100, OnRedisError: policy})
			dials := p.Stats().Request.Dials
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				r, err := l.Allow(ctx, keys[i%len(keys)])
				if err != nil || r.Source != SourceFallback {
					b.Fatalf("want the policy's answer, got %+v, %v", r, err)
				}
			}
			if d := p.Stats().Request.Dials - dials; d != 0 {
				b.Fatalf("%d dials while Redis was marked down", d)
			}
		})
	}
}
