package otelqueue_test

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/alicebob/miniredis/v2"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// A request enqueues a job through a Producer; a worker runs it through
// Handler: the job's run is a span of the request's trace. (A service
// exports spans with OTLP and a batcher; this example keeps them in memory
// to print them.)
func Example() {
	ctx := context.Background()
	mr, _ := miniredis.Run()
	defer mr.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{mr.Addr()}})
	defer p.Close() // last: after the group and the provider
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer func() { _ = tp.Shutdown(ctx) }()

	q, _ := queue.New(p, "emails", queue.Config{})
	ran := make(chan struct{})
	handle := func(ctx context.Context, j *queue.Job) error {
		fmt.Printf("handler: job %s carries a traceparent: %t\n", string(j.Payload), j.Headers["traceparent"] != "")
		close(ran)
		return nil
	}
	c, _ := queue.NewConsumer(p, queue.ConsumerConfig{})
	h, err := otelqueue.NewHandler(handle, otelqueue.WithTracerProvider(tp))
	if err != nil {
		fmt.Println(err)
		return
	}
	w, _ := queue.NewWorker(c, q, h.Handle, queue.WorkerConfig{})
	g := lifecycle.New()
	if err := w.Start(g); err != nil {
		fmt.Println(err)
		return
	}

	prod := otelqueue.NewProducer(otelqueue.WithTracerProvider(tp))
	reqCtx, req := tp.Tracer("web").Start(ctx, "POST /signup")
	if _, err := prod.Enqueue(reqCtx, q, []byte("welcome")); err != nil {
		fmt.Println(err)
	}
	req.End()

	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		fmt.Println("the job did not run")
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = g.Close(closeCtx) // drains the worker: the run's span has ended
	_ = h.Close()         // then the handler's metrics callback is unregistered

	ss := spans.GetSpans() // in the order they ended: the run may end before the send
	name := map[string]string{}
	for _, s := range ss {
		name[s.SpanContext.SpanID().String()] = s.Name
	}
	slices.SortFunc(ss, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	for _, s := range ss {
		fmt.Printf("%s (%s) parent=%q same trace=%t\n", s.Name, s.SpanKind, name[s.Parent.SpanID().String()],
			s.SpanContext.TraceID() == req.SpanContext().TraceID())
	}
	// Output:
	// handler: job welcome carries a traceparent: true
	// POST /signup (internal) parent="" same trace=true
	// send emails (producer) parent="POST /signup" same trace=true
	// process emails (consumer) parent="send emails" same trace=true
}

// ObserveStats reports a queue's counts when a metric reader collects (a
// Prometheus exporter's scrape, an OTLP exporter's interval), never on a
// timer of its own.
func ExampleObserveStats() {
	ctx := context.Background()
	mr, _ := miniredis.Run()
	defer mr.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{mr.Addr()}})
	defer p.Close()
	q, _ := queue.New(p, "emails", queue.Config{})
	_, _ = q.Enqueue(ctx, []byte("a"))
	_, _ = q.Enqueue(ctx, []byte("b"), queue.Delay(time.Hour))

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(ctx) }()
	obs, err := otelqueue.ObserveStats([]*queue.Queue{q}, otelqueue.WithMeterProvider(mp),
		otelqueue.WithStatsTimeout(500*time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer obs.Close()

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(ctx, &rm) // reads Redis now, within the timeout
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && (m.Name == "bounded.queue.jobs.ready" || m.Name == "bounded.queue.jobs.delayed") {
				fmt.Println(m.Name, g.DataPoints[0].Value)
			}
		}
	}
	// Unordered output:
	// bounded.queue.jobs.ready 1
	// bounded.queue.jobs.delayed 1
}
