package otelqueue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/bounded-go/bounded/queue"
)

// Span events the consumer span records when its run failed.
const (
	// EventRetry: the job runs again after a backoff.
	EventRetry = "retry"
	// EventDeadLetter: the job goes to the dead letters (its last attempt
	// failed, the handler returned queue.Permanent, or it failed after its
	// queue.Deadline).
	EventDeadLetter = "dead_letter"
	// EventCancelled: queue.Queue.Cancel cancelled the run (its ctx's
	// cause is queue.ErrCancelled) and it failed: the worker drops the job.
	EventCancelled = "cancelled"
)

// Attribute keys of bounded's own, beside the messaging semantic
// conventions.
const (
	AttrAttempt     = attribute.Key("bounded.queue.job.attempt")      // 1 on the first run
	AttrMaxAttempts = attribute.Key("bounded.queue.job.max_attempts") //
	AttrDeliveries  = attribute.Key("bounded.queue.job.deliveries")   // recoveries from dead consumers, when > 0
	AttrSchedule    = attribute.Key("bounded.queue.schedule")         // an occurrence's schedule
	AttrInterrupted = attribute.Key("bounded.queue.job.interrupted")  // the worker's drain cancelled the run: the job goes back, unchanged
	AttrFailure     = attribute.Key("bounded.queue.failure")          // on the failed counter: "retry", "dead_letter" or "cancelled"
	AttrReason      = attribute.Key("bounded.queue.dead_letter.reason")
	AttrError       = attribute.Key("bounded.queue.error") // EventContextDropped: why the queue refused the trace context
)

var (
	noopCounter   metric.Int64Counter     = noop.Int64Counter{}
	noopHistogram metric.Float64Histogram = noop.Float64Histogram{}
	noSpan        trace.Span              = tracenoop.Span{}
)

// handler is the state of one Handler wrapper.
type handler struct {
	next    queue.Handler
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
	newRoot bool
	// noTrace: the tracer provider is the no-op one (trace/noop): a run
	// reads no trace context and starts no span. Extracting the context
	// cost more than all of the wrapper's metrics together but one.
	noTrace bool

	duration, wait    metric.Float64Histogram
	processed, failed metric.Int64Counter

	attrs sync.Map // queue name -> *queueAttrs, one per queue the handler serves
}

// queueAttrs are what a run needs of its queue, built once: a run of a
// job whose span is not recorded allocates nothing for them.
type queueAttrs struct {
	name     string
	spanName string
	span     []attribute.KeyValue    // of the consumer span, before the job's own
	start    []trace.SpanStartOption // kind and span
	// The options of the measurements of a run that succeeded, and of its
	// wait, as slices: passing one to a variadic interface method
	// allocates nothing, where a single option is copied to the heap on
	// every call.
	okRecord []metric.RecordOption
	okAdd    []metric.AddOption
	wait     []metric.RecordOption
}

// Handler wraps next so that each run of a job is a consumer span named
// "process <queue>": the child of the producer span whose trace context
// the job carries in its headers (Producer, Producer.Inject), or with
// WithNewRoot the root of a new trace linked to it. The span has the
// messaging attributes (messaging.system "bounded",
// messaging.destination.name, messaging.message.id, messaging.operation.*)
// and the job's attempt; a failed run records the error and an event,
// EventRetry or EventDeadLetter. next's ctx carries the span.
//
// It records, through the meter: messaging.process.duration (seconds, per
// run, with error.type when it failed), bounded.queue.wait.duration (from
// enqueue, or an occurrence's due time, to the first run's start),
// bounded.queue.jobs.processed and bounded.queue.jobs.failed (with
// bounded.queue.failure "retry", "dead_letter" or "cancelled"). A run the
// worker's drain cancelled is neither: its job goes back to the ready
// list; one that Queue.Cancel cancelled and that failed records
// EventCancelled: the worker drops the job.
//
// A panic in next ends the span as failed and is re-raised for the worker
// to recover (queue.PanicError). A job the worker dead-letters without
// running it (malformed, MaxDeliveries) has no span. With a no-op tracer
// and meter provider (the default when none is set globally) the wrapper
// costs a few hundred nanoseconds a job (BenchmarkHandler).
//
// Handler(nil) is nil, which queue.NewWorker refuses.
func Handler(next queue.Handler, opts ...Option) queue.Handler {
	if next == nil {
		return nil
	}
	c := newConfig(opts)
	m := c.mp.Meter(ScopeName)
	h := &handler{next: next, tracer: c.tp.Tracer(ScopeName), prop: c.prop, newRoot: c.newRoot, noTrace: isNoopTracing(c.tp)}
	h.duration = histogram(m, "messaging.process.duration", "Duration of a job's run.")
	h.wait = histogram(m, "bounded.queue.wait.duration", "Time from a job's enqueue (an occurrence's due time) to its first run's start.")
	h.processed = counter(m, "bounded.queue.jobs.processed", "Runs that succeeded.")
	h.failed = counter(m, "bounded.queue.jobs.failed", "Runs that failed, retried or dead-lettered.")
	return h.handle
}

func histogram(m metric.Meter, name, desc string) metric.Float64Histogram {
	hist, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
	if err != nil {
		return noopHistogram
	}
	return hist
}

func counter(m metric.Meter, name, desc string) metric.Int64Counter {
	ctr, err := m.Int64Counter(name, metric.WithUnit("{job}"), metric.WithDescription(desc))
	if err != nil {
		return noopCounter
	}
	return ctr
}

// queueAttrs returns the attributes of the queue named name.
func (h *handler) queueAttrs(name string) *queueAttrs {
	if a, ok := h.attrs.Load(name); ok {
		return a.(*queueAttrs)
	}
	dest := semconv.MessagingDestinationName(name)
	a := &queueAttrs{
		name:     name,
		spanName: "process " + name,
		span:     []attribute.KeyValue{attrSystem, dest, attrOpProcess, attrOpNameProcs},
	}
	ok := metric.WithAttributeSet(attribute.NewSet(attrSystem, dest, attrOpNameProcs))
	a.okRecord, a.okAdd = []metric.RecordOption{ok}, []metric.AddOption{ok}
	a.wait = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrSystem, dest))}
	a.start = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(a.span...)}
	v, _ := h.attrs.LoadOrStore(name, a)
	return v.(*queueAttrs)
}

func (h *handler) handle(ctx context.Context, job *queue.Job) (err error) {
	a := h.queueAttrs(job.Queue)
	start := time.Now()
	if job.Attempt == 1 && job.Deliveries == 0 {
		from := job.EnqueuedAt
		if !job.Due.IsZero() {
			from = job.Due
		}
		h.wait.Record(ctx, max(start.Sub(from), 0).Seconds(), a.wait...)
	}
	// The measurements take the span's ctx only when the span records:
	// the SDK's default exemplar filter would otherwise sample, for every
	// measurement, the producer's span that a non-recording span carries.
	runCtx, mctx, span := ctx, ctx, trace.Span(nil)
	if !h.noTrace {
		runCtx, span = h.startSpan(ctx, job, a)
		if span.IsRecording() {
			mctx = runCtx
		}
	}
	defer func() {
		if v := recover(); v != nil {
			h.finish(mctx, span, job, a, start, &queue.PanicError{Value: v}, endNormal)
			panic(v)
		}
	}()
	err = h.next(runCtx, job)
	end := endNormal
	if err != nil {
		end = runEnd(runCtx)
	}
	h.finish(mctx, span, job, a, start, err, end)
	return err
}

// isNoopTracing reports whether tp is the OpenTelemetry no-op tracer
// provider, whose spans record nothing. The global provider is not: a
// provider set later becomes its delegate.
func isNoopTracing(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case tracenoop.TracerProvider, *tracenoop.TracerProvider:
		return true
	}
	return false
}

// How a failed run's ctx ended, as the worker tells them apart.
const (
	endNormal    = iota // not cancelled, or by the job's timeout
	endCancelled        // by Queue.Cancel: the worker drops the job
	endDrained          // by the worker's drain: the job goes back unchanged
)

// runEnd reports how ctx, the run's, ended. A cancel by Queue.Cancel is
// told apart from the drain by its cause, as the worker does.
func runEnd(ctx context.Context) int {
	switch {
	case errors.Is(context.Cause(ctx), queue.ErrCancelled):
		return endCancelled
	case errors.Is(ctx.Err(), context.Canceled):
		return endDrained
	}
	return endNormal
}

func (h *handler) startSpan(ctx context.Context, job *queue.Job, a *queueAttrs) (context.Context, trace.Span) {
	if len(job.Headers) > 0 {
		ctx = h.prop.Extract(ctx, propagation.MapCarrier(job.Headers))
	}
	opts := a.start
	if h.newRoot {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			opts = append(opts[:len(opts):len(opts)], trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	// The queue's attributes go to Start, for samplers; the job's only to
	// a span that is recorded.
	ctx, span := h.tracer.Start(ctx, a.spanName, opts...)
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingMessageID(job.ID), semconv.MessagingMessageBodySize(len(job.Payload)),
			AttrAttempt.Int(job.Attempt), AttrMaxAttempts.Int(job.MaxAttempts))
		if job.Deliveries > 0 {
			span.SetAttributes(AttrDeliveries.Int(job.Deliveries))
		}
		if job.Schedule != "" {
			span.SetAttributes(AttrSchedule.String(job.Schedule))
		}
	}
	return ctx, span
}

// finish ends the span (nil: tracing is off) and records the run. end:
// how its ctx ended (runEnd).
func (h *handler) finish(ctx context.Context, span trace.Span, job *queue.Job, a *queueAttrs, start time.Time, err error, end int) {
	if span == nil {
		span = noSpan
	}
	// The metrics are recorded before the span ends: whoever sees the
	// span ended (an exporter, a test) finds the run counted.
	took := time.Since(start).Seconds()
	if err == nil {
		h.duration.Record(ctx, took, a.okRecord...)
		h.processed.Add(ctx, 1, a.okAdd...)
		span.End()
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	et := semconv.ErrorType(err)
	dest := semconv.MessagingDestinationName(job.Queue)
	h.duration.Record(ctx, took, metric.WithAttributes(attrSystem, dest, attrOpNameProcs, et))
	if end == endDrained {
		span.SetAttributes(AttrInterrupted.Bool(true))
		span.End()
		return
	}
	failure := EventRetry
	switch {
	case end == endCancelled:
		failure = EventCancelled
		span.AddEvent(EventCancelled)
	case queue.IsPermanent(err):
		failure = EventDeadLetter
		span.AddEvent(EventDeadLetter, trace.WithAttributes(AttrReason.String("permanent")))
	case job.Attempt >= job.MaxAttempts:
		failure = EventDeadLetter
		span.AddEvent(EventDeadLetter, trace.WithAttributes(AttrReason.String(
			fmt.Sprintf("attempt %d of %d failed", job.Attempt, job.MaxAttempts))))
	case !job.Deadline.IsZero() && time.Now().After(job.Deadline):
		// Any retry would start after the deadline: the worker sends the
		// job to the dead letters. (A retry that the backoff alone pushes
		// past a deadline still ahead is dead-lettered too; the wrapper
		// cannot know the worker's backoff and reports a retry.)
		failure = EventDeadLetter
		span.AddEvent(EventDeadLetter, trace.WithAttributes(AttrReason.String("deadline")))
	default:
		span.AddEvent(EventRetry, trace.WithAttributes(AttrAttempt.Int(job.Attempt+1), AttrMaxAttempts.Int(job.MaxAttempts)))
	}
	h.failed.Add(ctx, 1, metric.WithAttributes(attrSystem, dest, attrOpNameProcs, et, AttrFailure.String(failure)))
	span.End()
}
