package otelqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/bounded-go/bounded/contrib/otel/otelqueue"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/queue"
)

// A request's span, an enqueue through the Producer, a real worker run on
// miniredis: one trace, request -> send -> process, with the messaging
// attributes, and the handler's ctx carrying the consumer span.
func TestProducerToConsumerTrace(t *testing.T) {
	e := newEnv(t)
	seen := make(chan trace.SpanContext, 1)
	headers := make(chan map[string]string, 1)
	e.start(otelqueue.Handler(func(ctx context.Context, j *queue.Job) error {
		seen <- trace.SpanContextFromContext(ctx)
		headers <- j.Headers
		return nil
	}, e.opts()...), queue.WorkerConfig{})

	prod := otelqueue.NewProducer(e.opts()...)
	ctx, req := e.tp.Tracer("test").Start(context.Background(), "request")
	id, err := prod.Enqueue(ctx, e.q, []byte("hello"), queue.Header("tenant", "t1"))
	if err != nil {
		t.Fatal(err)
	}
	req.End()
	inHandler := tu.Recv(t, seen, "the handler's run")
	h := tu.Recv(t, headers, "the job's headers")
	if h["tenant"] != "t1" || !strings.HasPrefix(h["traceparent"], "00-"+req.SpanContext().TraceID().String()) {
		t.Fatalf("job headers %v: want the caller's tenant and the request's traceparent", h)
	}

	ss := e.waitSpans(3)
	send, process := byName(ss, "send mail"), byName(ss, "process mail")
	if len(send) != 1 || len(process) != 1 {
		t.Fatalf("spans %v", names(ss))
	}
	s, p := send[0], process[0]
	if s.SpanKind != trace.SpanKindProducer || p.SpanKind != trace.SpanKindConsumer {
		t.Fatalf("kinds: send %v, process %v", s.SpanKind, p.SpanKind)
	}
	if s.Parent.SpanID() != req.SpanContext().SpanID() {
		t.Fatal("the send span is not the request's child")
	}
	if p.Parent.SpanID() != s.SpanContext.SpanID() || p.SpanContext.TraceID() != req.SpanContext().TraceID() {
		t.Fatalf("the process span's parent is %v, want the send span %v in the request's trace", p.Parent, s.SpanContext)
	}
	if !p.Parent.IsRemote() {
		t.Fatal("the process span's parent came from the job's headers: it is remote")
	}
	if inHandler.SpanID() != p.SpanContext.SpanID() {
		t.Fatal("the handler's ctx does not carry the process span")
	}
	for _, c := range []struct {
		span attrList
		want map[attribute.Key]string
	}{
		{s.Attributes, map[attribute.Key]string{
			semconv.MessagingSystemKey: "bounded", semconv.MessagingDestinationNameKey: "mail",
			semconv.MessagingOperationTypeKey: "send", semconv.MessagingOperationNameKey: "send",
			semconv.MessagingMessageIDKey: id, semconv.MessagingMessageBodySizeKey: "5",
		}},
		{p.Attributes, map[attribute.Key]string{
			semconv.MessagingSystemKey: "bounded", semconv.MessagingDestinationNameKey: "mail",
			semconv.MessagingOperationTypeKey: "process", semconv.MessagingOperationNameKey: "process",
			semconv.MessagingMessageIDKey: id, semconv.MessagingMessageBodySizeKey: "5",
			otelqueue.AttrAttempt: "1", otelqueue.AttrMaxAttempts: "5",
		}},
	} {
		for k, want := range c.want {
			if got := mustAttr(t, c.span, k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
	}
	if p.Status.Code == codes.Error || len(p.Events) != 0 {
		t.Fatalf("a run that succeeded: status %v, events %v", p.Status, p.Events)
	}

	m := e.collect()
	dest := semconv.MessagingDestinationName("mail")
	if got := m.must("bounded.queue.jobs.processed", dest); got != 1 {
		t.Fatalf("processed %v, want 1", got)
	}
	if got := m.must("messaging.process.duration", dest); got != 1 {
		t.Fatalf("%v run durations, want 1", got)
	}
	if got := m.must("bounded.queue.wait.duration", dest); got != 1 {
		t.Fatalf("%v waits, want 1", got)
	}
	if got := m.must("messaging.client.sent.messages", dest); got != 1 {
		t.Fatalf("%v sent, want 1", got)
	}
	if _, ok := m.value("bounded.queue.jobs.failed"); ok {
		t.Fatal("a failed count without a failure")
	}
}

type attrList = []attribute.KeyValue

// With WithNewRoot the run is a trace of its own, linked to the send.
func TestNewRootLinksToProducer(t *testing.T) {
	e := newEnv(t)
	done := make(chan struct{}, 1)
	e.start(otelqueue.Handler(func(context.Context, *queue.Job) error { done <- struct{}{}; return nil },
		e.opts(otelqueue.WithNewRoot())...), queue.WorkerConfig{})
	if _, err := otelqueue.NewProducer(e.opts()...).Enqueue(context.Background(), e.q, nil); err != nil {
		t.Fatal(err)
	}
	tu.Recv(t, done, "the run")
	ss := e.waitSpans(2)
	s, p := byName(ss, "send mail")[0], byName(ss, "process mail")[0]
	if p.Parent.IsValid() || p.SpanContext.TraceID() == s.SpanContext.TraceID() {
		t.Fatal("the process span is not a new root")
	}
	if len(p.Links) != 1 || p.Links[0].SpanContext.SpanID() != s.SpanContext.SpanID() {
		t.Fatalf("links %v, want the send span", p.Links)
	}
}

// A failed run that will be retried records the error and a retry event;
// the retry is another child of the same send span.
func TestRetryEvent(t *testing.T) {
	e := newEnv(t)
	e.start(otelqueue.Handler(func(_ context.Context, j *queue.Job) error {
		if j.Attempt == 1 {
			return errors.New("flaky")
		}
		return nil
	}, e.opts()...), queue.WorkerConfig{RetryBase: time.Millisecond, RetryMax: time.Millisecond})
	if _, err := otelqueue.NewProducer(e.opts()...).Enqueue(context.Background(), e.q, nil, queue.MaxAttempts(3)); err != nil {
		t.Fatal(err)
	}
	ss := e.waitSpans(3)
	send, runs := byName(ss, "send mail")[0], byName(ss, "process mail")
	first, second := runs[0], runs[1]
	if first.Status.Code != codes.Error || first.Status.Description != "flaky" {
		t.Fatalf("first run's status %v", first.Status)
	}
	if got := eventNames(first.Events); strings.Join(got, ",") != "exception,retry" {
		t.Fatalf("first run's events %v, want the exception and a retry", got)
	}
	if got := mustAttr(t, first.Events[1].Attributes, otelqueue.AttrAttempt); got != "2" {
		t.Fatalf("the retry event names attempt %s, want 2", got)
	}
	if second.Status.Code == codes.Error || len(second.Events) != 0 {
		t.Fatalf("second run: %v %v", second.Status, second.Events)
	}
	if mustAttr(t, second.Attributes, otelqueue.AttrAttempt) != "2" {
		t.Fatal("the second run is attempt 2")
	}
	for _, r := range runs {
		if r.Parent.SpanID() != send.SpanContext.SpanID() {
			t.Fatal("every attempt is a child of the send span: the headers survive a retry")
		}
	}
	m := e.collect()
	if got := m.must("bounded.queue.jobs.failed", otelqueue.AttrFailure.String("retry")); got != 1 {
		t.Fatalf("failed (retry) %v, want 1", got)
	}
	if got := m.must("bounded.queue.jobs.processed"); got != 1 {
		t.Fatalf("processed %v, want 1", got)
	}
	if got := m.must("messaging.process.duration", semconv.ErrorTypeKey.String("*errors.errorString")); got != 1 {
		t.Fatalf("%v failed run durations with error.type, want 1", got)
	}
	if got := m.must("bounded.queue.wait.duration"); got != 1 {
		t.Fatalf("%v waits: only the first run's start counts", got)
	}
}

func eventNames(evs []sdktrace.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Name)
	}
	return out
}

// queue.Permanent, and a last attempt that fails, record a dead_letter
// event with the reason.
func TestDeadLetterEvent(t *testing.T) {
	e := newEnv(t)
	e.start(otelqueue.Handler(func(_ context.Context, j *queue.Job) error {
		if string(j.Payload) == "permanent" {
			return queue.Permanent(errors.New("bad input"))
		}
		return errors.New("still failing")
	}, e.opts()...), queue.WorkerConfig{})
	prod := otelqueue.NewProducer(e.opts()...)
	ctx := context.Background()
	if _, err := prod.Enqueue(ctx, e.q, []byte("permanent")); err != nil {
		t.Fatal(err)
	}
	if _, err := prod.Enqueue(ctx, e.q, []byte("last"), queue.MaxAttempts(1)); err != nil {
		t.Fatal(err)
	}
	ss := e.waitSpans(4)
	reasons := map[string]bool{}
	for _, p := range byName(ss, "process mail") {
		if got := eventNames(p.Events); strings.Join(got, ",") != "exception,dead_letter" {
			t.Fatalf("events %v, want the exception and a dead letter", got)
		}
		reasons[mustAttr(t, p.Events[1].Attributes, otelqueue.AttrReason)] = true
	}
	if !reasons["permanent"] || !reasons["attempt 1 of 1 failed"] {
		t.Fatalf("dead letter reasons %v", reasons)
	}
	tu.Eventually(t, 10*time.Second, "two dead letters", func() bool {
		d, err := e.q.Dead(ctx, 0, 10)
		return err == nil && len(d) == 2
	})
	if got := e.collect().must("bounded.queue.jobs.failed", otelqueue.AttrFailure.String("dead_letter")); got != 2 {
		t.Fatalf("failed (dead_letter) %v, want 2", got)
	}
}

// A panic ends the span as failed and still reaches the worker, which
// counts it and retries the job.
func TestPanicEndsTheSpan(t *testing.T) {
	e := newEnv(t)
	w := e.start(otelqueue.Handler(func(_ context.Context, j *queue.Job) error {
		if j.Attempt == 1 {
			panic("boom")
		}
		return nil
	}, e.opts()...), queue.WorkerConfig{RetryBase: time.Millisecond, RetryMax: time.Millisecond})
	if _, err := e.q.Enqueue(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	ss := e.waitSpans(2)
	first := ss[0]
	if first.Status.Code != codes.Error || !strings.Contains(first.Status.Description, "boom") {
		t.Fatalf("the panicking run's status %v", first.Status)
	}
	if got := eventNames(first.Events); strings.Join(got, ",") != "exception,retry" {
		t.Fatalf("events %v", got)
	}
	if w.Stats().Panics != 1 {
		t.Fatalf("the worker counted %d panics, want 1", w.Stats().Panics)
	}
	if first.Parent.IsValid() {
		t.Fatal("a job enqueued without a Producer starts a trace of its own")
	}
}

// A run the worker's drain cancels is neither a failure nor a retry: the
// job goes back to the ready list unchanged.
func TestDrainIsNoFailure(t *testing.T) {
	e := newEnv(t)
	started := make(chan struct{}, 1)
	g := lifecycle.New()
	startOn(t, g, e.p, e.q, otelqueue.Handler(func(ctx context.Context, _ *queue.Job) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}, e.opts()...), queue.WorkerConfig{})
	if _, err := e.q.Enqueue(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	tu.Recv(t, started, "the run")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := g.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ss := e.waitSpans(1)
	if v := mustAttr(t, ss[0].Attributes, otelqueue.AttrInterrupted); v != "true" {
		t.Fatalf("interrupted = %s", v)
	}
	if got := eventNames(ss[0].Events); strings.Join(got, ",") != "exception" {
		t.Fatalf("events %v: no retry, no dead letter", got)
	}
	if _, ok := e.collect().value("bounded.queue.jobs.failed"); ok {
		t.Fatal("a drained run counted as failed")
	}
	s, err := e.q.Stats(context.Background())
	if err != nil || s.Ready != 1 {
		t.Fatalf("ready %d (%v): the job is back", s.Ready, err)
	}
}

// Tracing off: with the no-op tracer provider no span is made and the job
// carries no header; with a sampler that samples nothing, no span is
// exported but the (unsampled) trace context still travels.
func TestNoSpanWhenTracingIsOff(t *testing.T) {
	t.Run("noop provider", func(t *testing.T) {
		e := newEnv(t)
		headers := make(chan map[string]string, 1)
		off := otelqueue.WithTracerProvider(noop.NewTracerProvider())
		e.start(otelqueue.Handler(func(ctx context.Context, j *queue.Job) error {
			if trace.SpanContextFromContext(ctx).IsValid() {
				return errors.New("a span in the handler's ctx")
			}
			headers <- j.Headers
			return nil
		}, off), queue.WorkerConfig{})
		id, err := otelqueue.NewProducer(off).Enqueue(context.Background(), e.q, nil)
		if err != nil || id == "" {
			t.Fatal(err)
		}
		if h := tu.Recv(t, headers, "the run"); h != nil {
			t.Fatalf("headers %v: tracing off adds none", h)
		}
		if n := len(e.spans.GetSpans()); n != 0 {
			t.Fatalf("%d spans", n)
		}
	})
	t.Run("never sample", func(t *testing.T) {
		e := newEnv(t, sdktrace.WithSampler(sdktrace.NeverSample()))
		headers := make(chan map[string]string, 1)
		e.start(otelqueue.Handler(func(ctx context.Context, j *queue.Job) error {
			headers <- j.Headers
			return nil
		}, e.opts()...), queue.WorkerConfig{})
		if _, err := otelqueue.NewProducer(e.opts()...).Enqueue(context.Background(), e.q, nil); err != nil {
			t.Fatal(err)
		}
		if h := tu.Recv(t, headers, "the run"); !strings.HasSuffix(h["traceparent"], "-00") {
			t.Fatalf("headers %v: the unsampled decision travels", h)
		}
		if n := len(e.spans.GetSpans()); n != 0 {
			t.Fatalf("%d spans exported", n)
		}
		if got := e.collect().must("bounded.queue.jobs.processed"); got != 1 {
			t.Fatalf("metrics do not depend on tracing: processed %v", got)
		}
	})
}

// Inject adds nothing without a trace context, and leaves out what the
// queue would refuse or cannot hold, so tracing never fails an enqueue.
func TestInjectStaysWithinTheQueuesBounds(t *testing.T) {
	e := newEnv(t)
	if o := otelqueue.NewProducer(e.opts()...).Inject(context.Background()); o != nil {
		t.Fatal("an option without a trace context")
	}
	headers := make(chan map[string]string, 1)
	e.start(func(_ context.Context, j *queue.Job) error { headers <- j.Headers; return nil }, queue.WorkerConfig{})
	prod := otelqueue.NewProducer(e.opts(otelqueue.WithPropagator(propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, noisy{})))...)
	ctx, span := e.tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	if _, err := prod.Enqueue(ctx, e.q, nil); err != nil {
		t.Fatalf("tracing failed the enqueue: %v", err)
	}
	h := tu.Recv(t, headers, "the run")
	if len(h) != queue.MaxHeaders || h["traceparent"] == "" || h["bad key"] != "" || h["big"] != "" {
		t.Fatalf("%d headers %v: want 16, traceparent first, no bad or oversized one", len(h), h)
	}
}

// noisy is a propagator that writes more than a job can carry.
type noisy struct{}

func (noisy) Inject(_ context.Context, c propagation.TextMapCarrier) {
	for i := range 30 {
		c.Set(fmt.Sprintf("x-%02d", i), "v")
	}
	c.Set("bad key", "v")
	c.Set("big", strings.Repeat("b", queue.MaxHeaderBytes))
}
func (noisy) Extract(ctx context.Context, _ propagation.TextMapCarrier) context.Context { return ctx }
func (noisy) Fields() []string                                                          { return nil }

// A failed enqueue ends the send span with the error.
func TestProducerRecordsEnqueueErrors(t *testing.T) {
	e := newEnv(t)
	q, err := queue.New(e.p, "small", queue.Config{MaxPayload: 4})
	if err != nil {
		t.Fatal(err)
	}
	prod := otelqueue.NewProducer(e.opts()...)
	_, enqErr := prod.Enqueue(context.Background(), q, []byte("too large"))
	if !errors.Is(enqErr, queue.ErrPayloadTooLarge) {
		t.Fatalf("err %v", enqErr)
	}
	ids, err := prod.EnqueueBatch(context.Background(), q, [][]byte{[]byte("a"), []byte("b")})
	if err != nil || len(ids) != 2 {
		t.Fatal(err)
	}
	ss := e.waitSpans(2)
	if ss[0].Status.Code != codes.Error || len(ss[0].Events) != 1 {
		t.Fatalf("failed send: %v %v", ss[0].Status, ss[0].Events)
	}
	if mustAttr(t, ss[1].Attributes, semconv.MessagingBatchMessageCountKey) != "2" {
		t.Fatal("the batch's size")
	}
	m := e.collect()
	if got := m.must("messaging.client.sent.messages", semconv.ErrorType(enqErr)); got != 1 {
		t.Fatalf("failed sends %v", got)
	}
	if got := m.must("messaging.client.sent.messages"); got != 3 {
		t.Fatalf("sends %v, want 3", got)
	}
}

func TestHandlerOfNilIsNil(t *testing.T) {
	if otelqueue.Handler(nil) != nil {
		t.Fatal("Handler(nil) must stay nil for NewWorker to refuse it")
	}
}

// One wrapper may serve several queues: each run's span and metrics name
// its own queue.
func TestHandlerServesSeveralQueues(t *testing.T) {
	e := newEnv(t)
	other := newQueue(t, e.p, "sms")
	done := make(chan string, 4)
	h := otelqueue.Handler(func(_ context.Context, j *queue.Job) error { done <- j.Queue; return nil }, e.opts()...)
	e.start(h, queue.WorkerConfig{})
	g := lifecycle.New()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Close(ctx)
	})
	startOn(t, g, e.p, other, h, queue.WorkerConfig{})
	for _, q := range []*queue.Queue{e.q, other, e.q} {
		if _, err := q.Enqueue(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		tu.Recv(t, done, "a run")
	}
	ss := e.waitSpans(3)
	if len(byName(ss, "process mail")) != 2 || len(byName(ss, "process sms")) != 1 {
		t.Fatalf("spans %v", names(ss))
	}
	m := e.collect()
	if m.must("bounded.queue.jobs.processed", semconv.MessagingDestinationName("mail")) != 2 ||
		m.must("bounded.queue.jobs.processed", semconv.MessagingDestinationName("sms")) != 1 {
		t.Fatal("processed per queue")
	}
}
