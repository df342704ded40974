package queue

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkDrainHeaders drains 20,000 no-op jobs (one queue, concurrency
// 10) without headers and with a W3C trace context (traceparent and
// tracestate, 97 bytes). Each iteration drains both, in turn (the first
// one alternating), so that a noisy neighbour hits both alike; the metrics
// are medians of the iterations, cpu-ns/job the process's CPU time:
//
//	go test ./queue -run '^$' -bench DrainHeaders -benchtime 5x
func BenchmarkDrainHeaders(b *testing.B) {
	srv := redistest.Server(b)
	shapes := []struct {
		name string
		opts []EnqueueOption
	}{
		{"none", nil},
		{"traceparent", []EnqueueOption{Headers(map[string]string{
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"tracestate":  "rojo=00f067aa0ba902b7",
		})}},
	}
	rate := make([][]float64, len(shapes))
	cpu := make([][]float64, len(shapes))
	for i := range b.N {
		for k := range shapes {
			n := (i + k) % len(shapes)
			flush(b, srv)
			jobs, elapsed, c := drainWith(b, srv, 20_000, shapes[n].opts...)
			rate[n] = append(rate[n], float64(jobs)/elapsed.Seconds())
			cpu[n] = append(cpu[n], float64(c)/float64(jobs))
		}
	}
	for n, s := range shapes {
		b.ReportMetric(medianOf(rate[n]), s.name+"-jobs/s")
		b.ReportMetric(medianOf(cpu[n]), s.name+"-cpu-ns/job")
	}
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// drainWith enqueues jobs with opts, then measures from the worker's start
// to the last job's run, in wall and CPU time. The handler reads the job's
// headers.
func drainWith(b *testing.B, srv *redistest.Redis, jobs int, opts ...EnqueueOption) (int, time.Duration, time.Duration) {
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
	start, cpu := time.Now(), cpuTime()
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
	elapsed, cpu := time.Since(start), cpuTime()-cpu
	if want := int64(min(len(opts), 1) * jobs); seen.Load() != want {
		b.Fatalf("%d jobs had headers, want %d", seen.Load(), want)
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return jobs, elapsed, cpu
}

// BenchmarkDecodeHeaders is what a fetched job costs the worker to decode,
// headers included (into Job.Headers), without and with a trace context.
func BenchmarkDecodeHeaders(b *testing.B) {
	tc, err := encodeHeaders([]header{
		{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"tracestate", "rojo=00f067aa0ba902b7"},
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		headers []byte
	}{{"none", nil}, {"traceparent", tc}} {
		e := envelope{id: newID(time.Now()), maxAttempts: 25, enqueuedAt: time.Now(), headers: c.headers, payload: []byte("job")}
		elem := string(e.encode())
		b.Run(c.name, func(b *testing.B) {
			var sink map[string]string
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				d := decodeDeliveries([]string{elem})
				if d[0].err != nil {
					b.Fatal(d[0].err)
				}
				sink = headerMap(d[0].env.headers)
			}
			_ = sink
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
