package otelqueue_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// The shapes of the wrapper compared with the plain handler in one run:
//
//	go test ./otelqueue -run '^$' -bench . -benchtime 2000x -count 3
type shape struct {
	name string
	wrap func(b *testing.B, h queue.Handler) queue.Handler
}

func shapes() []shape {
	return []shape{
		{"plain", func(_ *testing.B, h queue.Handler) queue.Handler { return h }},
		{"tracing-off-metrics-off", func(_ *testing.B, h queue.Handler) queue.Handler {
			return otelqueue.Handler(h, otelqueue.WithTracerProvider(tracenoop.NewTracerProvider()),
				otelqueue.WithMeterProvider(metricnoop.NewMeterProvider()))
		}},
		{"tracing-off-metrics-on", func(b *testing.B, h queue.Handler) queue.Handler {
			return otelqueue.Handler(h, otelqueue.WithTracerProvider(tracenoop.NewTracerProvider()),
				otelqueue.WithMeterProvider(sdkMeter(b)))
		}},
		{"tracing-on-metrics-on", func(b *testing.B, h queue.Handler) queue.Handler {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return otelqueue.Handler(h, otelqueue.WithTracerProvider(tp), otelqueue.WithMeterProvider(sdkMeter(b)))
		}},
	}
}

func sdkMeter(b *testing.B) *sdkmetric.MeterProvider {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mp
}

// BenchmarkHandler is the wrapper's own cost per job: a no-op handler
// called directly with a job that carries a traceparent. cpu-ns/op is the
// process's CPU time per call, steadier than ns/op on a shared machine.
func BenchmarkHandler(b *testing.B) {
	job := &queue.Job{ID: "0123456789abcdef", Queue: "mail", Payload: []byte("job"), Attempt: 1, MaxAttempts: 5,
		EnqueuedAt: time.Now(), Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	for _, s := range shapes() {
		b.Run(s.name, func(b *testing.B) {
			h := s.wrap(b, func(context.Context, *queue.Job) error { return nil })
			ctx := context.Background()
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if err := h(ctx, job); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkDrain drains 20,000 no-op jobs enqueued with a trace context
// (one queue, concurrency 10, a real redis-server) through the plain
// handler and each shape of the wrapper. Each iteration drains every shape
// once, in turn (the first one rotating), so that a noisy neighbour hits
// them all alike; the metrics are per shape, medians of the iterations
// (the first shape, plain, is the reference of the -extra-cpu-% ones):
//
//	go test ./otelqueue -run '^$' -bench Drain -benchtime 5x
func BenchmarkDrain(b *testing.B) {
	srv := redistest.Server(b)
	all := shapes()
	rate := make([][]float64, len(all))
	cpu := make([][]float64, len(all))
	for i := range b.N {
		for k := range all {
			n := (i + k) % len(all)
			if _, err := srv.Do(context.Background(), "FLUSHALL"); err != nil {
				b.Fatal(err)
			}
			jobs, took, c := drain(b, srv.Addr(), 20_000, all[n].wrap)
			rate[n] = append(rate[n], float64(jobs)/took.Seconds())
			cpu[n] = append(cpu[n], float64(c)/float64(jobs))
		}
	}
	for n, s := range all {
		b.ReportMetric(median(rate[n]), s.name+"-jobs/s")
		b.ReportMetric(median(cpu[n]), s.name+"-cpu-ns/job")
		if n == 0 {
			continue
		}
		// The extra CPU per job over the plain handler's drain of the
		// same iteration, in percent: a median of paired comparisons,
		// steadier than comparing the medians of each.
		extra := make([]float64, len(cpu[n]))
		for i := range extra {
			extra[i] = 100 * (cpu[n][i]/cpu[0][i] - 1)
		}
		b.ReportMetric(median(extra), s.name+"-extra-cpu-%")
	}
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// drain returns the jobs drained, the wall time and this process's CPU
// time from the worker's start to the last job's run.
func drain(b *testing.B, addr string, jobs int, wrap func(*testing.B, queue.Handler) queue.Handler) (int, time.Duration, time.Duration) {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, err := queue.New(p, "drain", queue.Config{})
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	defer func() { _ = tp.Shutdown(ctx) }()
	ctx, span := tp.Tracer("bench").Start(ctx, "request")
	prod := otelqueue.NewProducer(otelqueue.WithTracerProvider(tp), otelqueue.WithMeterProvider(metricnoop.NewMeterProvider()))
	payloads := make([][]byte, 1000)
	for i := range payloads {
		payloads[i] = []byte("job")
	}
	for n := 0; n < jobs; n += len(payloads) {
		if _, err := prod.EnqueueBatch(ctx, q, payloads[:min(len(payloads), jobs-n)]); err != nil {
			b.Fatal(err)
		}
	}
	span.End()
	var done atomic.Int64
	all := make(chan struct{})
	h := wrap(b, func(context.Context, *queue.Job) error {
		if done.Add(1) == int64(jobs) {
			close(all)
		}
		return nil
	})
	c, err := queue.NewConsumer(p, queue.ConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	w, err := queue.NewWorker(c, q, h, queue.WorkerConfig{Concurrency: 10})
	if err != nil {
		b.Fatal(err)
	}
	g := lifecycle.New()
	start, cpu := time.Now(), cpuTime()
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		b.Fatal("the drain did not finish within a minute")
	}
	took, cpu := time.Since(start), cpuTime()-cpu
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return jobs, took, cpu
}
