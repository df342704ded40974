package otelqueue_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// countingProvider is an SDK meter provider that counts the callbacks
// registered and not yet unregistered (live) and the calls of any of them
// (calls).
type countingProvider struct {
	metric.MeterProvider
	live, calls *atomic.Int64
}

func newCountingProvider(mp metric.MeterProvider) countingProvider {
	return countingProvider{MeterProvider: mp, live: new(atomic.Int64), calls: new(atomic.Int64)}
}

func (p countingProvider) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return countingMeter{Meter: p.MeterProvider.Meter(name, opts...), p: p}
}

type countingMeter struct {
	metric.Meter
	p countingProvider
}

func (m countingMeter) RegisterCallback(f metric.Callback, insts ...metric.Observable) (metric.Registration, error) {
	reg, err := m.Meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		m.p.calls.Add(1)
		return f(ctx, o)
	}, insts...)
	if err != nil {
		return nil, err
	}
	m.p.live.Add(1)
	return &countingReg{Registration: reg, live: m.p.live}, nil
}

type countingReg struct {
	metric.Registration
	live *atomic.Int64
	done atomic.Bool
}

func (r *countingReg) Unregister() error {
	if r.done.CompareAndSwap(false, true) {
		r.live.Add(-1)
	}
	return r.Registration.Unregister()
}

// runOne enqueues one job to q and runs q's jobs through h on a worker of
// its own until n ran (that one and those q held before), then stops the
// worker.
func runOne(t *testing.T, p *pool.Pool, q *queue.Queue, h queue.Handler, n int) {
	t.Helper()
	g := lifecycle.New()
	ran := make(chan struct{}, n)
	startOn(t, g, p, q, func(ctx context.Context, j *queue.Job) error {
		err := h(ctx, j)
		select {
		case ran <- struct{}{}:
		default:
		}
		return err
	}, queue.WorkerConfig{Concurrency: 1})
	if _, err := q.Enqueue(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	for range n {
		tu.Recv(t, ran, "the jobs' runs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A Handler whose worker is gone stops reporting once it is collected: its
// callback is unregistered, and collections neither call it nor report its
// queue. (Before, the callback lasted as long as the meter provider: a
// process that replaces its workers reported every dead one for ever.)
func TestHandlerCallbackReleasedWhenUnreachable(t *testing.T) {
	r := sdkmetric.NewManualReader()
	sdk := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	mp := newCountingProvider(sdk)
	p := newPool(t, pool.Config{Addrs: []string{redistest.Mini(t).Addr()}})
	q := newQueue(t, p, "mail")

	h := otelqueue.Handler(func(context.Context, *queue.Job) error { return nil }, otelqueue.WithMeterProvider(mp))
	runOne(t, p, q, h, 1)
	if got := collectFrom(t, r).must("bounded.queue.jobs.processed", semconv.MessagingDestinationName("mail")); got != 1 {
		t.Fatalf("processed %v, want 1", got)
	}
	runtime.KeepAlive(h) // reachable until here: the collection above reports it
	tu.Eventually(t, 10*time.Second, "the unreachable handler's callback to be unregistered", func() bool {
		runtime.GC()
		return mp.live.Load() == 0
	})
	calls := mp.calls.Load()
	if _, ok := collectFrom(t, r).value("bounded.queue.jobs.processed"); ok {
		t.Fatal("processed still reported after the handler was collected")
	}
	if got := mp.calls.Load(); got != calls {
		t.Fatalf("%d callbacks called after the handler was collected", got-calls)
	}
}

// NewHandler's Close unregisters its callback at once: later collections
// neither call it nor report its queue's processed count. Close is
// idempotent, and Handle still runs jobs after it.
func TestNewHandlerClose(t *testing.T) {
	r := sdkmetric.NewManualReader()
	sdk := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	mp := newCountingProvider(sdk)
	p := newPool(t, pool.Config{Addrs: []string{redistest.Mini(t).Addr()}})
	q := newQueue(t, p, "mail")

	in, err := otelqueue.NewHandler(func(context.Context, *queue.Job) error { return nil }, otelqueue.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	if got := mp.live.Load(); got != 1 {
		t.Fatalf("%d callbacks registered, want 1", got)
	}
	runOne(t, p, q, in.Handle, 1)
	if got := collectFrom(t, r).must("bounded.queue.jobs.processed", semconv.MessagingDestinationName("mail")); got != 1 {
		t.Fatalf("processed %v, want 1", got)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal("Close is idempotent:", err)
	}
	if got := mp.live.Load(); got != 0 {
		t.Fatalf("%d callbacks registered after Close", got)
	}
	calls := mp.calls.Load()
	if _, ok := collectFrom(t, r).value("bounded.queue.jobs.processed"); ok {
		t.Fatal("processed reported after Close")
	}
	if got := mp.calls.Load(); got != calls {
		t.Fatalf("%d callbacks called after Close", got-calls)
	}
	if err := in.Handle(context.Background(), &queue.Job{ID: "j", Queue: "mail", Attempt: 1, MaxAttempts: 1}); err != nil {
		t.Fatal("Handle after Close:", err)
	}
	if _, err := otelqueue.NewHandler(nil); err == nil {
		t.Fatal("NewHandler(nil) accepted")
	}
}

// A closed StatsObserver's callback is not called: a collection after
// Close neither reads Redis nor reports the queue.
func TestObserveStatsCloseCallsNothing(t *testing.T) {
	r := sdkmetric.NewManualReader()
	sdk := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	mp := newCountingProvider(sdk)
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	o, err := otelqueue.ObserveStats([]*queue.Queue{newQueue(t, p, "mail")}, otelqueue.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	collectFrom(t, r).must("bounded.queue.jobs.ready")
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mp.live.Load(); got != 0 {
		t.Fatalf("%d callbacks registered after Close", got)
	}
	calls, cmds := mp.calls.Load(), m.CommandCount()
	if _, ok := collectFrom(t, r).value("bounded.queue.jobs.ready"); ok {
		t.Fatal("reported after Close")
	}
	if mp.calls.Load() != calls || m.CommandCount() != cmds {
		t.Fatalf("after Close: %d callbacks called, %d Redis commands", mp.calls.Load()-calls, m.CommandCount()-cmds)
	}
}
