package otelqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
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
		t.Errorf("interrupted = %s: the job was cancelled, not put back by a drain", v.Emit())
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
