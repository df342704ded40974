package queue

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// The cost of routing and middleware per job, against a plain handler, in
// one run:
//
//	go test ./queue -run '^$' -bench 'MuxCall|MuxDrain' -benchtime 5x -count 1
//
// BenchmarkMuxCall calls the handler directly (the router's own cost);
// BenchmarkMuxDrain drains jobs through a worker on a real redis-server.

// benchMiddlewares are two middlewares of the usual kind: one counts runs
// by outcome, one keeps the job's type in ctx for the code below.
func benchMiddlewares(runs, failed *atomic.Int64) []Middleware {
	type typeKey struct{}
	return []Middleware{
		func(next Handler) Handler {
			return func(ctx context.Context, j *Job) error {
				err := next(ctx, j)
				if err != nil {
					failed.Add(1)
				}
				runs.Add(1)
				return err
			}
		},
		func(next Handler) Handler {
			return func(ctx context.Context, j *Job) error {
				return next(context.WithValue(ctx, typeKey{}, j.Type), j)
			}
		},
	}
}

// benchShapes are the handlers compared: the plain handler h, h behind a
// Mux of 20 types, and that Mux behind two middlewares.
func benchShapes(h Handler, runs, failed *atomic.Int64) []struct {
	name  string
	typed bool
	h     Handler
} {
	m := new(Mux)
	for i := range 19 {
		m.Handle(fmt.Sprintf("other.type%d", i), h)
	}
	m.Handle("bench.job", h)
	return []struct {
		name  string
		typed bool
		h     Handler
	}{
		{"plain", false, h},
		{"typed-plain", true, h},
		{"mux", true, m.Run},
		{"mux+2mw", true, Chain(m.Run, benchMiddlewares(runs, failed)...)},
	}
}

func BenchmarkMuxCall(b *testing.B) {
	var runs, failed atomic.Int64
	for _, s := range benchShapes(func(context.Context, *Job) error { return nil }, &runs, &failed) {
		b.Run(s.name, func(b *testing.B) {
			job := &Job{ID: "0123456789abcdef", Queue: "bench", Payload: []byte("job"), Attempt: 1}
			if s.typed {
				job.Type = "bench.job"
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := s.h(ctx, job); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMuxDrain drains 20,000 no-op jobs (one queue, concurrency 10)
// through each shape; each iteration drains every shape once, in turn
// (the first rotating), and the metrics are per shape, medians of the
// iterations: jobs/s, and the process's heap allocations per job (the
// enqueue excluded).
func BenchmarkMuxDrain(b *testing.B) {
	srv := redistest.Server(b)
	var runs, failed atomic.Int64
	var done atomic.Int64
	var all chan struct{}
	const jobs = 20_000
	h := func(context.Context, *Job) error {
		if done.Add(1) == jobs {
			close(all)
		}
		return nil
	}
	shapes := benchShapes(h, &runs, &failed)
	rate := make([][]float64, len(shapes))
	allocs := make([][]float64, len(shapes))
	for i := range b.N {
		for k := range shapes {
			n := (i + k) % len(shapes)
			flush(b, srv)
			done.Store(0)
			all = make(chan struct{})
			took, mallocs := muxDrain(b, srv, jobs, shapes[n].typed, shapes[n].h, all)
			rate[n] = append(rate[n], jobs/took.Seconds())
			allocs[n] = append(allocs[n], float64(mallocs)/jobs)
		}
	}
	for n, s := range shapes {
		b.ReportMetric(medianOf(rate[n]), s.name+"-jobs/s")
		b.ReportMetric(medianOf(allocs[n]), s.name+"-allocs/job")
	}
	if failed.Load() != 0 {
		b.Fatalf("%d runs failed", failed.Load())
	}
}

// muxDrain enqueues jobs, typed or not, then measures from the worker's
// start to the last run: the wall time and the heap allocations.
func muxDrain(b *testing.B, srv *redistest.Redis, jobs int, typed bool, h Handler, all chan struct{}) (time.Duration, uint64) {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, err := New(p, "muxdrain", Config{})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([][]byte, 1000)
	for i := range payload {
		payload[i] = []byte("job")
	}
	var opts []EnqueueOption
	if typed {
		opts = append(opts, Type("bench.job"))
	}
	for n := 0; n < jobs; n += len(payload) {
		if _, err := q.EnqueueBatch(ctx, payload[:min(len(payload), jobs-n)], opts...); err != nil {
			b.Fatal(err)
		}
	}
	w, err := newWorker(b, q, h, WorkerConfig{Concurrency: 10})
	if err != nil {
		b.Fatal(err)
	}
	g := lifecycle.New()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.Mallocs
	start := time.Now()
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	benchRecv(b, all, "the drain to finish")
	took := time.Since(start)
	runtime.ReadMemStats(&ms)
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return took, ms.Mallocs - before
}
