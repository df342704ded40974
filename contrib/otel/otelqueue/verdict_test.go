package otelqueue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/queue"
)

// A failed run whose retry the worker's backoff would start after the
// job's deadline, still ahead when the run fails, is dead-lettered by the
// worker; the span and the failed counter must say so, not "retry".
func TestRetryPastTheDeadlineIsReportedDeadLettered(t *testing.T) {
	e := newEnv(t)
	dead := make(chan queue.Outcome, 1)
	e.start(otelqueue.Handler(func(context.Context, *queue.Job) error {
		return errors.New("flaky")
	}, e.opts()...), queue.WorkerConfig{
		Backoff: func(int, error) time.Duration { return time.Hour },
		OnDead:  func(o queue.Outcome) { dead <- o },
	})
	if _, err := otelqueue.NewProducer(e.opts()...).Enqueue(context.Background(), e.q, nil,
		queue.MaxAttempts(5), queue.Deadline(time.Now().Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	o := tu.Recv(t, dead, "the dead letter")
	if !strings.Contains(o.Reason, "deadline") {
		t.Fatalf("the worker's reason %q: the test expects a dead letter for the deadline", o.Reason)
	}
	run := byName(e.waitSpans(2), "process mail")[0]
	if got := eventNames(run.Events); strings.Join(got, ",") != "exception,dead_letter" {
		t.Fatalf("events %v, want the exception and a dead letter: the worker dead-lettered the job", got)
	}
	if got := mustAttr(t, run.Events[1].Attributes, otelqueue.AttrReason); got != "deadline" {
		t.Fatalf("dead letter reason %q, want deadline", got)
	}
	m := e.collect()
	if got, ok := m.value("bounded.queue.jobs.failed", otelqueue.AttrFailure.String("retry")); ok {
		t.Fatalf("failed (retry) %v: no retry was written", got)
	}
	if got := m.must("bounded.queue.jobs.failed", otelqueue.AttrFailure.String("dead_letter")); got != 1 {
		t.Fatalf("failed (dead_letter) %v, want 1", got)
	}
}
