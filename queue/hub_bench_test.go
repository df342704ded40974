package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkIdleQueues starts one consumer with 1 and with 1,000 idle
// queues (BlockTimeout 1s) and reports, over ten BlockTimeouts after
// start-up, the Redis commands per second (INFO commandstats, scripts'
// inner calls included) and the connections blocked in Redis.
func BenchmarkIdleQueues(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for range b.N {
				srv := redistest.Server(b)
				cmdsPerSec, blocked := idleQueues(b, srv, n)
				b.ReportMetric(cmdsPerSec, "cmds/s")
				b.ReportMetric(float64(blocked), "blocking-conns")
			}
		})
	}
}

func idleQueues(b *testing.B, srv *redistest.Redis, n int) (float64, int) {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}, Background: pool.LaneConfig{Size: 8}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	g := lifecycle.New()
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = g.Close(cctx)
	}()
	c, err := NewConsumer(p, ConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		q, _ := New(p, fmt.Sprint("idle", i), Config{})
		w, err := NewWorker(c, q, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 1, BlockTimeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Start(g); err != nil {
			b.Fatal(err)
		}
	}
	return idleRate(b, srv)
}

// idleRate measures an idle consumer on srv over 10 of its fetch hub's
// BZPOPMIN timeouts (after 2 for the start-up): Redis commands per second
// (INFO and CLIENT LIST, the measurement's own, left out), and the
// connections blocked in BZPOPMIN or BLMOVE.
func idleRate(b *testing.B, srv *redistest.Redis) (float64, int) {
	ctx := context.Background()
	calls := func() (total, rounds int64) {
		s, err := srv.CommandStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return redistest.TotalCalls(s, "info", "client|list"), s["bzpopmin"]
	}
	waitRounds := func(k int64) {
		_, r0 := calls()
		deadline := time.Now().Add(time.Duration(k+20) * time.Second)
		for _, r := calls(); r < r0+k; _, r = calls() {
			if time.Now().After(deadline) {
				b.Fatalf("no %d BZPOPMIN timeouts within %s", k, time.Duration(k+20)*time.Second)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitRounds(2) // start-up done
	b.ResetTimer()
	t0, _ := calls()
	start := time.Now()
	waitRounds(10)
	t1, _ := calls()
	elapsed := time.Since(start)
	b.StopTimer()
	clients, err := srv.Clients(ctx)
	if err != nil {
		b.Fatal(err)
	}
	blocked := 0
	for _, cl := range clients {
		if strings.Contains(cl, " cmd=bzpopmin ") || strings.Contains(cl, " cmd=blmove ") {
			blocked++
		}
	}
	return float64(t1-t0) / elapsed.Seconds(), blocked
}
