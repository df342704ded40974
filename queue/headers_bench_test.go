package queue

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkDrainHeaders drains 20,000 no-op jobs (one queue, concurrency
// 10) without headers and with a W3C trace context (traceparent and
// tracestate, 97 bytes), in the same run:
//
//	go test ./queue -run '^$' -bench DrainHeaders -benchtime 1x -count 5
func BenchmarkDrainHeaders(b *testing.B) {
	srv := redistest.Server(b)
	for _, c := range []struct {
		name string
		opts []EnqueueOption
	}{
		{"none", nil},
		{"traceparent", []EnqueueOption{Headers(map[string]string{
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"tracestate":  "rojo=00f067aa0ba902b7",
		})}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				jobs, elapsed := drainWith(b, srv, 20_000, c.opts...)
				b.ReportMetric(float64(jobs)/elapsed.Seconds(), "jobs/s")
			}
		})
	}
}

// drainWith enqueues jobs with opts, then measures from the worker's start
// to the last job's run. The handler reads the job's headers.
func drainWith(b *testing.B, srv *redistest.Redis, jobs int, opts ...EnqueueOption) (int, time.Duration) {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, _ := New(p, "drainh", Config{})
	payload := make([][]byte, 1000)
	for i := range payload {
		payload[i] = []byte("job")
	}
	for n := 0; n < jobs; n += len(payload) {
		if _, err := q.EnqueueBatch(ctx, payload[:min(len(payload), jobs-n)], opts...); err != nil {
			b.Fatal(err)
		}
	}
	var done, seen atomic.Int64
	all := make(chan struct{})
	g := lifecycle.New()
	b.ResetTimer()
	start := time.Now()
	w, err := newWorker(b, q, func(ctx context.Context, j *Job) error {
		if j.Headers["traceparent"] != "" {
			seen.Add(1)
		}
		if done.Add(1) == int64(jobs) {
			close(all)
		}
		return nil
	}, WorkerConfig{Concurrency: 10})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	benchRecv(b, all, "the drain to finish")
	elapsed := time.Since(start)
	b.StopTimer()
	if want := int64(min(len(opts), 1) * jobs); seen.Load() != want {
		b.Fatalf("%d jobs had headers, want %d", seen.Load(), want)
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return jobs, elapsed
}
