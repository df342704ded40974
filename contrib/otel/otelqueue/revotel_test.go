package otelqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// Adversarial review of contrib/otel (issue 19): the wrapper's account of
// a run must agree with what the worker does with the job.

// A run cancelled by Queue.Cancel is dropped by the worker, never put back:
// the span must not say the drain interrupted it, and it must say the job
// was cancelled.
func TestCancelledRunIsNotADrain(t *testing.T) {
	e := newEnv(t)
	started := make(chan string, 1)
	g := lifecycle.New()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Close(ctx)
	})
	c, err := queue.NewConsumer(e.p, queue.ConsumerConfig{Control: true})
	if err != nil {
		t.Fatal(err)
	}
	w, err := queue.NewWorker(c, e.q, otelqueue.Handler(func(ctx context.Context, j *queue.Job) error {
		started <- j.ID
		<-ctx.Done()
		return context.Cause(ctx)
	}, e.opts()...), queue.WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(g); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := e.q.Enqueue(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tu.Recv(t, started, "the run")
	tu.Eventually(t, 10*time.Second, "the cancel", func() bool { return e.q.Cancel(ctx, id) == nil })
	ss := e.waitSpans(1)
	if v, ok := attr(ss[0].Attributes, otelqueue.AttrInterrupted); ok {
		t.Errorf("interrupted = %s: the job was cancelled, not put back by a drain", v.String())
	}
	if got := eventNames(ss[0].Events); strings.Join(got, ",") != "exception,"+otelqueue.EventCancelled {
		t.Errorf("events %v, want the exception and %q", got, otelqueue.EventCancelled)
	}
	if got := e.collect().must("bounded.queue.jobs.failed", otelqueue.AttrFailure.String(otelqueue.EventCancelled)); got != 1 {
		t.Errorf("failed (cancelled) %v, want 1", got)
	}
	s, err := e.q.Stats(ctx)
	if err != nil || s.Ready != 0 || s.Delayed != 0 || s.Dead != 0 {
		t.Fatalf("stats %+v (%v): the cancelled job is dropped", s, err)
	}
}

// A run that fails after its job's Deadline is dead-lettered by the worker
// (its retry would start after the deadline): the span must say so, not
// announce a retry.
func TestFailureAfterTheDeadlineIsADeadLetter(t *testing.T) {
	e := newEnv(t)
	e.start(otelqueue.Handler(func(_ context.Context, j *queue.Job) error {
		// Let the deadline pass: the clock is what this test is about.
		time.Sleep(time.Until(j.Deadline) + 5*time.Millisecond)
		return errors.New("too late")
	}, e.opts()...), queue.WorkerConfig{RetryBase: time.Millisecond, RetryMax: time.Millisecond})
	ctx := context.Background()
	if _, err := e.q.Enqueue(ctx, nil, queue.Deadline(time.Now().Add(time.Second)), queue.MaxAttempts(5)); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		d, err := e.q.Dead(ctx, 0, 10)
		return err == nil && len(d) == 1
	})
	ss := e.waitSpans(1)
	if got := eventNames(ss[0].Events); strings.Join(got, ",") != "exception,dead_letter" {
		t.Errorf("events %v: the worker dead-lettered the job", got)
	}
	if got := e.collect().must("bounded.queue.jobs.failed", otelqueue.AttrFailure.String("dead_letter")); got != 1 {
		t.Errorf("failed (dead_letter) %v, want 1", got)
	}
}

// Tracing never fails an enqueue: a job whose own headers fill the queue's
// bounds (16 entries, or 4 KiB) is enqueued, without the trace context,
// exactly as q.Enqueue would.
func TestProducerNeverFailsAnEnqueueTheQueueAccepts(t *testing.T) {
	e := newEnv(t)
	prod := otelqueue.NewProducer(e.opts()...)
	ctx, span := e.tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	sixteen := map[string]string{}
	for i := range queue.MaxHeaders {
		sixteen[fmt.Sprintf("k%02d", i)] = "v"
	}
	full := queue.Header("big", strings.Repeat("x", queue.MaxHeaderBytes-len("big")))
	for name, opt := range map[string]queue.EnqueueOption{"16 entries": queue.Headers(sixteen), "4 KiB": full} {
		if _, err := e.q.Enqueue(ctx, nil, opt); err != nil {
			t.Fatalf("%s: the queue refuses it: %v", name, err)
		}
		if _, err := prod.Enqueue(ctx, e.q, nil, opt); err != nil {
			t.Errorf("%s: Producer.Enqueue: %v", name, err)
		}
		if _, err := prod.EnqueueBatch(ctx, e.q, [][]byte{nil, nil}, opt); err != nil {
			t.Errorf("%s: Producer.EnqueueBatch: %v", name, err)
		}
	}
	// What the queue refuses without tracing stays refused.
	if _, err := prod.Enqueue(ctx, e.q, nil, queue.Header("bad key", "v")); !errors.Is(err, queue.ErrInvalidHeader) {
		t.Fatalf("err %v, want ErrInvalidHeader", err)
	}
}

// A batch that fits Config.MaxBatchBytes without the trace context is
// enqueued without it rather than refused.
func TestProducerBatchAtItsByteBound(t *testing.T) {
	e := newEnv(t)
	q, err := queue.New(e.p, "tight", queue.Config{MaxBatchBytes: 400})
	if err != nil {
		t.Fatal(err)
	}
	payloads := [][]byte{make([]byte, 100), make([]byte, 100)}
	prod := otelqueue.NewProducer(e.opts()...)
	ctx, span := e.tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	if _, err := prod.EnqueueBatch(ctx, q, payloads); err != nil {
		t.Fatalf("Producer.EnqueueBatch: %v", err)
	}
	send := byName(e.waitSpans(1), "send tight")[0]
	if got := eventNames(send.Events); strings.Join(got, ",") != otelqueue.EventContextDropped {
		t.Fatalf("events %v", got)
	}
	if ids, err := q.EnqueueBatch(ctx, payloads); err != nil || len(ids) != 2 {
		t.Fatalf("the queue accepts the batch by itself: %v", err)
	}
}

// Collections by two readers of one meter provider, at the same time and
// while the observer closes: no race (go test -race), every collection
// that reports counts reports the queue's, and nothing outlives Close.
func TestObserveStatsConcurrentCollections(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	for range 2 {
		if _, err := q.Enqueue(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	r1, r2 := sdkmetric.NewManualReader(), sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r1), sdkmetric.WithReader(r2))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	o, err := otelqueue.ObserveStats([]*queue.Queue{q}, otelqueue.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 50
	type result struct {
		ready float64
		ok    bool
		err   error
	}
	results := make(chan result, 2*rounds)
	var wg sync.WaitGroup
	for _, r := range []*sdkmetric.ManualReader{r1, r2} {
		wg.Go(func() {
			for range rounds {
				var rm metricdata.ResourceMetrics
				err := r.Collect(context.Background(), &rm)
				res := result{err: err}
				for _, sm := range rm.ScopeMetrics {
					for _, mm := range sm.Metrics {
						if g, ok := mm.Data.(metricdata.Gauge[int64]); ok && mm.Name == "bounded.queue.jobs.ready" && len(g.DataPoints) == 1 {
							res.ready, res.ok = float64(g.DataPoints[0].Value), true
						}
					}
				}
				results <- res
			}
		})
	}
	wg.Wait()
	close(results)
	seen := 0
	for res := range results {
		if res.err != nil {
			t.Fatal(res.err)
		}
		if res.ok {
			seen++
			if res.ready != 2 {
				t.Fatalf("ready %v, want 2", res.ready)
			}
		}
	}
	if seen < rounds {
		t.Fatalf("%d of %d collections reported the counts", seen, 2*rounds)
	}
	// Close while a reader collects.
	done := make(chan error, 1)
	go func() {
		var rm metricdata.ResourceMetrics
		done <- r1.Collect(context.Background(), &rm)
	}()
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tu.Recv(t, done, "the collection"); err != nil {
		t.Fatal(err)
	}
}

// The messaging semantic conventions require messaging.client.operation.duration
// for a producer's send (seconds, with messaging.operation.name and
// messaging.system; error.type when it failed), as for the span.
func TestProducerRecordsOperationDuration(t *testing.T) {
	e := newEnv(t)
	prod := otelqueue.NewProducer(e.opts()...)
	ctx := context.Background()
	if _, err := prod.Enqueue(ctx, e.q, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := prod.EnqueueBatch(ctx, e.q, [][]byte{nil, nil}); err != nil {
		t.Fatal(err)
	}
	_, enqErr := prod.Enqueue(ctx, e.q, nil, queue.Header("bad key", "v"))
	if enqErr == nil {
		t.Fatal("a bad header was accepted")
	}
	m := e.collect()
	send := semconv.MessagingOperationName("send")
	if got := m.must("messaging.client.operation.duration", send, semconv.MessagingSystemKey.String("bounded"),
		semconv.MessagingDestinationName("mail")); got != 3 {
		t.Fatalf("%v send durations, want 3 (one per call)", got)
	}
	if got := m.must("messaging.client.operation.duration", semconv.ErrorType(enqErr)); got != 1 {
		t.Fatalf("%v failed send durations, want 1", got)
	}
	if u := m.by["messaging.client.operation.duration"].Unit; u != "s" {
		t.Fatalf("unit %q", u)
	}
}
