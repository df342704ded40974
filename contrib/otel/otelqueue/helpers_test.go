package otelqueue_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a queue on miniredis with an SDK tracer provider exporting
// synchronously to memory and a meter provider read by hand.
type env struct {
	t      *testing.T
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	p      *pool.Pool
	q      *queue.Queue
}

func newEnv(t *testing.T, tpOpts ...sdktrace.TracerProviderOption) *env {
	t.Helper()
	e := &env{t: t, spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	e.tp = sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithSyncer(e.spans)}, tpOpts...)...)
	e.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.reader))
	t.Cleanup(func() {
		_ = e.tp.Shutdown(context.Background())
		_ = e.mp.Shutdown(context.Background())
	})
	m := redistest.Mini(t)
	e.p = newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	e.q = newQueue(t, e.p, "mail")
	return e
}

// opts are the options that point at e's providers.
func (e *env) opts(more ...otelqueue.Option) []otelqueue.Option {
	return append([]otelqueue.Option{otelqueue.WithTracerProvider(e.tp), otelqueue.WithMeterProvider(e.mp)}, more...)
}

// start runs h on e's queue until the end of the test (before the pool
// closes).
func (e *env) start(h queue.Handler, cfg queue.WorkerConfig) *queue.Worker {
	e.t.Helper()
	g := lifecycle.New()
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Close(ctx); err != nil {
			e.t.Error(err)
		}
	})
	return startOn(e.t, g, e.p, e.q, h, cfg)
}

func startOn(t *testing.T, g *lifecycle.Group, p *pool.Pool, q *queue.Queue, h queue.Handler, cfg queue.WorkerConfig) *queue.Worker {
	t.Helper()
	c, err := queue.NewConsumer(p, queue.ConsumerConfig{Namespace: q.Namespace()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := queue.NewWorker(c, q, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(g); err != nil {
		t.Fatal(err)
	}
	return w
}

func newPool(t testing.TB, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newQueue(t testing.TB, p *pool.Pool, name string) *queue.Queue {
	t.Helper()
	q, err := queue.New(p, name, queue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// waitSpans waits until n spans ended and returns them.
func (e *env) waitSpans(n int) tracetest.SpanStubs {
	e.t.Helper()
	tu.Eventually(e.t, 10*time.Second, "spans to end", func() bool { return len(e.spans.GetSpans()) >= n })
	s := e.spans.GetSpans()
	if len(s) != n {
		e.t.Fatalf("%d spans ended, want %d: %v", len(s), n, names(s))
	}
	return s
}

func names(ss tracetest.SpanStubs) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

// byName returns the spans named name, in the order they ended.
func byName(ss tracetest.SpanStubs, name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range ss {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(kvs []attribute.KeyValue, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func mustAttr(t *testing.T, kvs []attribute.KeyValue, key attribute.Key) string {
	t.Helper()
	v, ok := attr(kvs, key)
	if !ok {
		t.Fatalf("no attribute %s in %v", key, kvs)
	}
	return v.String()
}

// collect reads every metric once.
func (e *env) collect() metrics {
	e.t.Helper()
	return collectFrom(e.t, e.reader)
}

func collectFrom(t *testing.T, r *sdkmetric.ManualReader) metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return metricsOf(t, rm)
}

func metricsOf(t *testing.T, rm metricdata.ResourceMetrics) metrics {
	m := metrics{t: t, by: map[string]metricdata.Metrics{}}
	for _, sm := range rm.ScopeMetrics {
		for _, mm := range sm.Metrics {
			m.by[mm.Name] = mm
		}
	}
	return m
}

type metrics struct {
	t  *testing.T
	by map[string]metricdata.Metrics
}

// value is the sum of name's data points (a histogram's: their count)
// that have every attribute of match; ok is false without any.
func (m metrics) value(name string, match ...attribute.KeyValue) (v float64, ok bool) {
	mm, found := m.by[name]
	if !found {
		return 0, false
	}
	has := func(set attribute.Set) bool {
		for _, kv := range match {
			if got, ok := set.Value(kv.Key); !ok || got != kv.Value {
				return false
			}
		}
		return true
	}
	switch d := mm.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes) {
				v, ok = v+float64(p.Value), true
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes) {
				v, ok = v+float64(p.Value), true
			}
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes) {
				v, ok = v+p.Value, true
			}
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes) {
				v, ok = v+float64(p.Count), true
			}
		}
	default:
		m.t.Fatalf("metric %s has data of type %T", name, mm.Data)
	}
	return v, ok
}

func (m metrics) must(name string, match ...attribute.KeyValue) float64 {
	m.t.Helper()
	v, ok := m.value(name, match...)
	if !ok {
		m.t.Fatalf("no %s %v; have %v", name, match, m.names())
	}
	return v
}

func (m metrics) names() []string {
	var out []string
	for n := range m.by {
		out = append(out, n)
	}
	return out
}
