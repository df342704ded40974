package prometheus_test

import (
	"context"
	"fmt"
	"testing"

	prom "github.com/prometheus/client_golang/prometheus"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// BenchmarkScrape100Queues measures one scrape of a QueueCollector over 100
// queues on a real redis-server (each holding one job), with and without a
// worker per queue, and, in the same run, the floor: calling
// queue.Queue.Stats on each directly.
// It reports ns/scrape and the Redis commands one scrape sends.
func BenchmarkScrape100Queues(b *testing.B) {
	srv := redistest.Server(b)
	p := newPool(b, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	qs := make([]*queue.Queue, 100)
	for i := range qs {
		qs[i] = newQueue(b, p, fmt.Sprintf("q%03d", i))
		enqueue(b, qs[i], 1)
	}
	commands := func() int64 {
		st, err := srv.CommandStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return redistest.TotalCalls(st, "info")
	}
	run := func(b *testing.B, scrape func()) {
		scrape() // connections open, scripts loaded
		before := commands()
		b.ResetTimer()
		for b.Loop() {
			scrape()
		}
		b.StopTimer()
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/scrape")
		b.ReportMetric(float64(commands()-before)/float64(b.N), "redis-cmds/scrape")
	}
	b.Run("collector", func(b *testing.B) {
		reg := prom.NewRegistry()
		reg.MustRegister(bprom.NewQueueCollector(bprom.QueueConfig{Queues: qs}))
		run(b, func() {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		})
	})
	// With a worker per queue (not started: their counters and two
	// histograms of 28 buckets each are exported all the same), the cost
	// of the in-process part of the exposition; it reads no Redis.
	b.Run("collector-with-workers", func(b *testing.B) {
		cons, err := queue.NewConsumer(p, queue.ConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		ws := make([]*queue.Worker, len(qs))
		for i, q := range qs {
			if ws[i], err = queue.NewWorker(cons, q, func(context.Context, *queue.Job) error { return nil }, queue.WorkerConfig{}); err != nil {
				b.Fatal(err)
			}
		}
		reg := prom.NewRegistry()
		reg.MustRegister(bprom.NewQueueCollector(bprom.QueueConfig{Queues: qs, Workers: ws}))
		run(b, func() {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("plain-stats", func(b *testing.B) {
		run(b, func() {
			for _, q := range qs {
				if _, err := q.Stats(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
