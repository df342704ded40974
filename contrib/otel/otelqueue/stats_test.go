package otelqueue_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

func observe(t *testing.T, qs []*queue.Queue, opts ...otelqueue.Option) (*sdkmetric.ManualReader, *otelqueue.StatsObserver) {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	o, err := otelqueue.ObserveStats(qs, append(opts, otelqueue.WithMeterProvider(mp))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return r, o
}

// The counts are read from Redis when a reader collects, and only then.
func TestObserveStatsReadsRedisOnlyWhenCollected(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	ctx := context.Background()
	for range 3 {
		if _, err := q.Enqueue(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Enqueue(ctx, nil, queue.Delay(time.Hour)); err != nil {
		t.Fatal(err)
	}
	before := m.CommandCount()
	r, _ := observe(t, []*queue.Queue{q})
	if got := m.CommandCount(); got != before {
		t.Fatalf("registering read Redis: %d commands", got-before)
	}
	s := collectFrom(t, r)
	dest := semconv.MessagingDestinationName("mail")
	for name, want := range map[string]float64{
		"bounded.queue.jobs.ready": 3, "bounded.queue.jobs.delayed": 1, "bounded.queue.jobs.in_flight": 0,
		"bounded.queue.jobs.dead": 0, "bounded.queue.consumers": 0, "bounded.queue.stats.errors": 0,
	} {
		if got := s.must(name, dest); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if age := s.must("bounded.queue.stats.age", dest); age < 0 || age > 1 {
		t.Fatalf("age %v of counts read by this collection", age)
	}
	if m.CommandCount() == before {
		t.Fatal("the collection did not read Redis")
	}
}

// A Redis that never answers costs a collection the timeout, all queues
// together, and leaves only the error counters.
func TestObserveStatsTimeout(t *testing.T) {
	p := newPool(t, pool.Config{Addrs: []string{redistest.BlackHole(t)}, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
		Request: pool.LaneConfig{MaxWait: time.Minute}})
	qs := []*queue.Queue{newQueue(t, p, "a"), newQueue(t, p, "b")}
	r, _ := observe(t, qs, otelqueue.WithStatsTimeout(50*time.Millisecond))
	// The collection runs off the test goroutine (it must not hang the
	// test), which must not call t.Fatal: it sends its error back.
	done := make(chan error, 1)
	var rm metricdata.ResourceMetrics
	go func() { done <- r.Collect(context.Background(), &rm) }()
	if err := tu.Recv(t, done, "a collection against a Redis that never answers"); err != nil {
		t.Fatal(err)
	}
	s := metricsOf(t, rm)
	for _, q := range []string{"a", "b"} {
		dest := semconv.MessagingDestinationName(q)
		if got := s.must("bounded.queue.stats.errors", dest); got != 1 {
			t.Fatalf("errors of %s: %v", q, got)
		}
		if _, ok := s.value("bounded.queue.jobs.ready", dest); ok {
			t.Fatalf("counts of %s, never read", q)
		}
	}
}

// Redis gone after a read: the last counts stay, with their age, and the
// error is counted. Close unregisters.
func TestObserveStatsKeepsLastValue(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	if _, err := q.Enqueue(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	r, o := observe(t, []*queue.Queue{q}, otelqueue.WithStatsTimeout(200*time.Millisecond))
	dest := semconv.MessagingDestinationName("mail")
	if got := collectFrom(t, r).must("bounded.queue.jobs.ready", dest); got != 1 {
		t.Fatalf("ready %v", got)
	}
	m.Close()
	s := collectFrom(t, r)
	if got := s.must("bounded.queue.jobs.ready", dest); got != 1 {
		t.Fatalf("ready %v after Redis went away: want the last value", got)
	}
	if got := s.must("bounded.queue.stats.errors", dest); got != 1 {
		t.Fatalf("errors %v", got)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal("Close is idempotent:", err)
	}
	if _, ok := collectFrom(t, r).value("bounded.queue.jobs.ready"); ok {
		t.Fatal("reported after Close")
	}
}

func TestObserveStatsRefusesBadQueues(t *testing.T) {
	p := newPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	a := newQueue(t, p, "a")
	if _, err := otelqueue.ObserveStats([]*queue.Queue{a, nil}); err == nil || err.Error() != "otelqueue: ObserveStats: queue 1 is nil" {
		t.Fatalf("err %v", err)
	}
	if _, err := otelqueue.ObserveStats([]*queue.Queue{a, a}); err == nil || err.Error() != `otelqueue: ObserveStats: queue "a" of namespace "bq" appears twice` {
		t.Fatalf("err %v", err)
	}
}
