package otelqueue_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// nsKey is otelqueue.AttrNamespace, spelled out.
const nsKey = attribute.Key("bounded.queue.namespace")

// Two queues named "mail" in two namespaces are two queues: their counts,
// enqueues and runs are reported apart (bounded.queue.namespace), never
// summed, and one ObserveStats takes both.
func TestSameNameInTwoNamespaces(t *testing.T) {
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	p := newPool(t, pool.Config{Addrs: []string{redistest.Mini(t).Addr()}})
	qa, err := queue.New(p, "mail", queue.Config{Namespace: "a"})
	if err != nil {
		t.Fatal(err)
	}
	qb, err := queue.New(p, "mail", queue.Config{Namespace: "b"})
	if err != nil {
		t.Fatal(err)
	}
	opt := otelqueue.WithMeterProvider(mp)
	o, err := otelqueue.ObserveStats([]*queue.Queue{qa, qb}, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })

	ctx := context.Background()
	prod := otelqueue.NewProducer(opt)
	for range 2 {
		if _, err := prod.Enqueue(ctx, qa, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := prod.Enqueue(ctx, qb, []byte("x")); err != nil {
		t.Fatal(err)
	}
	dest := semconv.MessagingDestinationName("mail")
	s := collectFrom(t, r)
	for ns, want := range map[string]float64{"a": 2, "b": 1} {
		if got := s.must("bounded.queue.jobs.ready", dest, nsKey.String(ns)); got != want {
			t.Errorf("ready of mail in %s: %v, want %v", ns, got, want)
		}
		if got := s.must("messaging.client.sent.messages", dest, nsKey.String(ns)); got != want {
			t.Errorf("sent to mail in %s: %v, want %v", ns, got, want)
		}
	}

	// One handler serves a worker of each namespace (each has a consumer
	// of its namespace).
	h := otelqueue.Handler(func(context.Context, *queue.Job) error { return nil }, opt)
	runOne(t, p, qa, h, 3)
	runOne(t, p, qb, h, 2)
	s = collectFrom(t, r)
	for ns, want := range map[string]float64{"a": 3, "b": 2} {
		if got := s.must("bounded.queue.jobs.processed", dest, nsKey.String(ns)); got != want {
			t.Errorf("processed of mail in %s: %v, want %v", ns, got, want)
		}
		if got := s.must("messaging.process.duration", dest, nsKey.String(ns)); got != want {
			t.Errorf("runs of mail in %s: %v, want %v", ns, got, want)
		}
	}
}
