package otelqueue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	"github.com/bounded-go/bounded/queue"
)

// Tests of what the wrapper's cheaper paths must keep (BenchmarkHandler
// and BenchmarkDrain measure the cost).

func tracedJob(q string) *queue.Job {
	return &queue.Job{ID: "0123456789abcdef", Queue: q, Payload: []byte("job"), Attempt: 1, MaxAttempts: 5,
		EnqueuedAt: time.Now(), Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
}

// bounded.queue.jobs.processed is read at collection: two wrappers of one
// queue report one sum, which stays cumulative across collections, and a
// queue with no run that succeeded reports nothing.
func TestProcessedSumsHandlersOfOneQueue(t *testing.T) {
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	opts := []otelqueue.Option{otelqueue.WithMeterProvider(mp), otelqueue.WithTracerProvider(tracenoop.NewTracerProvider())}
	ok := func(context.Context, *queue.Job) error { return nil }
	h1, h2 := otelqueue.Handler(ok, opts...), otelqueue.Handler(ok, opts...)
	failing := otelqueue.Handler(func(context.Context, *queue.Job) error { return errors.New("boom") }, opts...)
	ctx := context.Background()
	for _, h := range []queue.Handler{h1, h1, h2} {
		if err := h(ctx, tracedJob("mail")); err != nil {
			t.Fatal(err)
		}
	}
	if err := failing(ctx, tracedJob("sms")); err == nil {
		t.Fatal("the failing handler succeeded")
	}
	mail := semconv.MessagingDestinationName("mail")
	for range 2 {
		m := collectFrom(t, r)
		if got := m.must("bounded.queue.jobs.processed", mail); got != 3 {
			t.Fatalf("processed %v, want 3 (2 + 1 of two wrappers)", got)
		}
		if got, ok := m.value("bounded.queue.jobs.processed", semconv.MessagingDestinationName("sms")); ok {
			t.Fatalf("processed %v for a queue whose only run failed", got)
		}
		if got := m.must("messaging.process.duration", mail); got != 3 {
			t.Fatalf("durations %v, want 3", got)
		}
	}
	if got := collectFrom(t, r).must("bounded.queue.jobs.failed", semconv.MessagingDestinationName("sms")); got != 1 {
		t.Fatalf("failed %v", got)
	}
}

// With tracing off the handler's ctx carries no span (the wrapper reads no
// trace context), and no measurement takes the producer's span, which a
// non-recording span would carry, as an exemplar: the SDK's default filter
// keeps exemplars of sampled spans.
func TestNoExemplarOfTheProducerWhenTracingIsOff(t *testing.T) {
	never := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	t.Cleanup(func() { _ = never.Shutdown(context.Background()) })
	for name, tp := range map[string]trace.TracerProvider{
		"noop provider": tracenoop.NewTracerProvider(),
		"never sample":  never,
	} {
		t.Run(name, func(t *testing.T) {
			r := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			var inCtx trace.SpanContext
			h := otelqueue.Handler(func(ctx context.Context, _ *queue.Job) error {
				inCtx = trace.SpanContextFromContext(ctx)
				return nil
			}, otelqueue.WithMeterProvider(mp), otelqueue.WithTracerProvider(tp))
			if err := h(context.Background(), tracedJob("mail")); err != nil {
				t.Fatal(err)
			}
			if inCtx.IsSampled() {
				t.Fatalf("the handler's ctx carries a sampled span %v with tracing off", inCtx)
			}
			var rm metricdata.ResourceMetrics
			if err := r.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, sm := range rm.ScopeMetrics {
				for _, mm := range sm.Metrics {
					if d, ok := mm.Data.(metricdata.Histogram[float64]); ok {
						for _, p := range d.DataPoints {
							n++
							if len(p.Exemplars) > 0 {
								t.Errorf("%s: exemplar of trace %x with tracing off", mm.Name, p.Exemplars[0].TraceID)
							}
						}
					}
				}
			}
			if n != 2 {
				t.Fatalf("%d histogram points, want the run's duration and its wait", n)
			}
		})
	}
}
