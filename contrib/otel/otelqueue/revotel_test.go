package otelqueue_test

import (
	"context"
	"errors"
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
