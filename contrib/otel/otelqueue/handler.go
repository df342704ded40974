package otelqueue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
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
	// AttrNamespace is the queue's namespace (queue.Config.Namespace), on
	// every span and measurement beside messaging.destination.name: two
	// queues of one name in two namespaces are two series.
	AttrNamespace = attribute.Key("bounded.queue.namespace")
)

var (
	noopCounter   metric.Int64Counter     = noop.Int64Counter{}
	noopHistogram metric.Float64Histogram = noop.Float64Histogram{}
	noSpan        trace.Span              = tracenoop.Span{}
)

// handler is the state of one Handler wrapper.
type handler struct {
	next    queue.Handler
	meter   metric.Meter
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
	newRoot bool
	// noTrace: the tracer provider is the no-op one (trace/noop): a run
	// reads no trace context and starts no span. Extracting the context
	// cost a run about 270 ns and 2 allocations, as much as one SDK
	// measurement, to pass it through a span that records nothing.
	noTrace bool

	duration, wait metric.Float64Histogram
	failed         metric.Int64Counter

	queues *queues
	last   atomic.Pointer[queueAttrs] // of the latest run: a wrapper usually serves one queue
}

// queues are the queues a handler served, each with its attributes and
// its count of runs that succeeded.
type queues struct {
	m sync.Map // queueKey -> *queueAttrs, one per queue the handler serves
}

// queueKey names a queue: its namespace and its name.
type queueKey struct{ ns, name string }

// queueAttrs are what a run needs of its queue, built once: a run of a
// job whose span is not recorded allocates nothing for them.
type queueAttrs struct {
	key      queueKey
	base     []attribute.KeyValue // messaging.system, messaging.destination.name, bounded.queue.namespace
	spanName string
	span     []attribute.KeyValue    // of the consumer span, before the job's own
	start    []trace.SpanStartOption // kind and span
	// The options of the measurements of a run that succeeded, and of its
	// wait, as slices: passing one to a variadic interface method
	// allocates nothing, where a single option is copied to the heap on
	// every call.
	okRecord  []metric.RecordOption
	okObserve []metric.ObserveOption
	wait      []metric.RecordOption
	// processed counts the runs that succeeded, reported at collection
	// (bounded.queue.jobs.processed): an atomic add costs a run a few
	// nanoseconds where a synchronous counter's Add cost it 200-300 in
	// the SDK, about 2 % of a job's CPU on the drain benchmark.
	processed atomic.Int64
}

// Handler wraps next so that each run of a job is a consumer span named
// "process <queue>": the child of the producer span whose trace context
// the job carries in its headers (Producer, Producer.Inject), or with
// WithNewRoot the root of a new trace linked to it. The span has the
// messaging attributes (messaging.system "bounded",
// messaging.destination.name, messaging.message.id, messaging.operation.*),
// the queue's namespace (AttrNamespace) and the job's attempt; a failed
// run records the error and an event, EventRetry or EventDeadLetter.
// next's ctx carries the span.
//
// It records, through the meter: messaging.process.duration (seconds, per
// run, with error.type when it failed), bounded.queue.wait.duration (from
// enqueue, or an occurrence's due time, to the first run's start),
// bounded.queue.jobs.processed and bounded.queue.jobs.failed (with
// bounded.queue.failure "retry", "dead_letter" or "cancelled"), each with
// the queue's name and namespace. A run the worker's drain cancelled is
// neither: its job goes back to the ready list; one that Queue.Cancel
// cancelled and that failed records EventCancelled: the worker drops the
// job.
//
// A panic in next ends the span as failed and is re-raised for the worker
// to recover (queue.PanicError). A job the worker dead-letters without
// running it (malformed, MaxDeliveries) has no span.
//
// With the no-op tracer provider (go.opentelemetry.io/otel/trace/noop)
// the wrapper reads no trace context and starts no span: next's ctx does
// not carry the producer's span context on to the handler's own enqueues.
// The global provider is not taken for a no-op one (a provider set later
// becomes its delegate). With tracing off and an SDK meter provider a run
// costs about 0.5 µs of CPU (two histogram records; BenchmarkHandler,
// BenchmarkDrain).
//
// bounded.queue.jobs.processed is counted in the wrapper and reported by a
// callback registered on the meter. Handler has no Close: its callback is
// unregistered once the returned function is unreachable (garbage
// collected), so a program that stops a worker stops its reports only at
// a later GC. NewHandler gives the same wrapper with a Close that
// unregisters at once: use it where workers come and go.
//
// Handler(nil) is nil, which queue.NewWorker refuses.
func Handler(next queue.Handler, opts ...Option) queue.Handler {
	if next == nil {
		return nil
	}
	in, err := NewHandler(next, opts...)
	if err != nil { // only a meter that refuses the callback: no processed count
		return newHandler(next, newConfig(opts)).handle
	}
	// The cleanup holds the registration, not in: once the worker drops the
	// handler, in is collected and the callback unregistered.
	runtime.AddCleanup(in, func(reg metric.Registration) { _ = reg.Unregister() }, in.reg)
	return in.Handle
}

// Instrumented is a queue.Handler wrapped as Handler wraps it, with a
// Close that unregisters its metrics callback: after Close, collections
// report no bounded.queue.jobs.processed of its queues and do not call it.
// (The synchronous instruments, run durations and failures, keep the
// series they recorded, as OpenTelemetry's instruments do.)
//
// Build it with NewHandler; the zero value is not usable. It is safe for
// concurrent use. Close it after the worker that runs Handle stopped
// (lifecycle.Group.Close, or lifecycle.Group.OnClose).
type Instrumented struct {
	h   *handler
	mu  sync.Mutex
	reg metric.Registration // nil once closed
}

// NewHandler wraps next as Handler does and returns the wrapper: give
// its Handle to queue.NewWorker and Close it when the worker has stopped.
// A nil next, or a meter that refuses the callback, is an error.
func NewHandler(next queue.Handler, opts ...Option) (*Instrumented, error) {
	if next == nil {
		return nil, errors.New("otelqueue: NewHandler: next is nil")
	}
	h := newHandler(next, newConfig(opts))
	reg, err := observeProcessed(h.meter, h.queues)
	if err != nil {
		return nil, fmt.Errorf("otelqueue: NewHandler: %w", err)
	}
	return &Instrumented{h: h, reg: reg}, nil
}

// Handle runs the job through the wrapper: a queue.Handler.
func (in *Instrumented) Handle(ctx context.Context, job *queue.Job) error {
	return in.h.handle(ctx, job)
}

// Close unregisters the callback that reports bounded.queue.jobs.processed.
// Handle still runs jobs after Close, but their successes are no longer
// reported. It is idempotent.
func (in *Instrumented) Close() error {
	in.mu.Lock()
	reg := in.reg
	in.reg = nil
	in.mu.Unlock()
	if reg == nil {
		return nil
	}
	return reg.Unregister()
}

func newHandler(next queue.Handler, c config) *handler {
	m := c.mp.Meter(ScopeName)
	h := &handler{next: next, meter: m, tracer: c.tp.Tracer(ScopeName), prop: c.prop, newRoot: c.newRoot, noTrace: isNoopTracing(c.tp)}
	h.duration = histogram(m, "messaging.process.duration", "Duration of a job's run.")
	h.wait = histogram(m, "bounded.queue.wait.duration", "Time from a job's enqueue (an occurrence's due time) to its first run's start.")
	h.failed = counter(m, "bounded.queue.jobs.failed", "Runs that failed, retried or dead-lettered.")
	h.queues = &queues{}
	return h
}

// observeProcessed registers the callback that reports qs's runs that
// succeeded as bounded.queue.jobs.processed. The callback holds qs only,
// not the handler (Handler's cleanup needs the handler unreachable). Two
// handlers of one queue report one sum (the SDK adds the observations of
// one attribute set in a collection).
func observeProcessed(m metric.Meter, qs *queues) (metric.Registration, error) {
	ctr, err := m.Int64ObservableCounter("bounded.queue.jobs.processed", metric.WithUnit("{job}"),
		metric.WithDescription("Runs that succeeded."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		qs.m.Range(func(_, v any) bool {
			a := v.(*queueAttrs)
			if n := a.processed.Load(); n > 0 {
				o.ObserveInt64(ctr, n, a.okObserve...)
			}
			return true
		})
		return nil
	}, ctr)
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

// queueAttrs returns the attributes of the queue named name in the
// namespace ns ("" for a Job built by hand: no namespace attribute).
func (h *handler) queueAttrs(ns, name string) *queueAttrs {
	k := queueKey{ns: ns, name: name}
	if a := h.last.Load(); a != nil && a.key == k {
		return a
	}
	if a, ok := h.queues.m.Load(k); ok {
		h.last.Store(a.(*queueAttrs))
		return a.(*queueAttrs)
	}
	base := baseAttrs(ns, name)
	a := &queueAttrs{
		key:      k,
		base:     base,
		spanName: "process " + name,
		span:     append(slices.Clip(base), attrOpProcess, attrOpNameProcs),
	}
	ok := metric.WithAttributeSet(attribute.NewSet(append(slices.Clip(base), attrOpNameProcs)...))
	a.okRecord, a.okObserve = []metric.RecordOption{ok}, []metric.ObserveOption{ok}
	a.wait = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(base...))}
	a.start = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(a.span...)}
	v, _ := h.queues.m.LoadOrStore(k, a)
	h.last.Store(v.(*queueAttrs))
	return v.(*queueAttrs)
}

// baseAttrs are the attributes of a queue on every span and measurement:
// messaging.system, messaging.destination.name and, when known,
// bounded.queue.namespace.
func baseAttrs(ns, name string) []attribute.KeyValue {
	base := []attribute.KeyValue{attrSystem, semconv.MessagingDestinationName(name)}
	if ns != "" {
		base = append(base, AttrNamespace.String(ns))
	}
	return base
}

func (h *handler) handle(ctx context.Context, job *queue.Job) (err error) {
	a := h.queueAttrs(job.Namespace, job.Queue)
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
		a.processed.Add(1)
		span.End()
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	et := semconv.ErrorType(err)
	h.duration.Record(ctx, took, metric.WithAttributes(append(slices.Clip(a.base), attrOpNameProcs, et)...))
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
	default:
		// What the worker writes: Job.Verdict draws the retry's delay the
		// worker then uses, so a retry the backoff would start after the
		// job's deadline is reported as the dead letter it becomes.
		v, ok := job.Verdict(err)
		if !ok { // a Job that is not a worker's: what can be known of it
			v = guessVerdict(job, err)
		}
		if v.Retry {
			span.AddEvent(EventRetry, trace.WithAttributes(AttrAttempt.Int(job.Attempt+1), AttrMaxAttempts.Int(job.MaxAttempts)))
			break
		}
		failure = EventDeadLetter
		span.AddEvent(EventDeadLetter, trace.WithAttributes(AttrReason.String(deadReason(job, err))))
	}
	h.failed.Add(ctx, 1, metric.WithAttributes(append(slices.Clip(a.base), attrOpNameProcs, et, AttrFailure.String(failure))...))
	span.End()
}

// guessVerdict is the verdict on a run of a Job built by hand, which has
// no worker to ask: a retry unless the error is permanent, the attempt the
// last or the deadline past.
func guessVerdict(job *queue.Job, err error) queue.Verdict {
	if queue.IsPermanent(err) || job.Attempt >= job.MaxAttempts ||
		(!job.Deadline.IsZero() && time.Now().After(job.Deadline)) {
		return queue.Verdict{}
	}
	return queue.Verdict{Retry: true}
}

// deadReason is the dead letter's reason on the span's event, in short:
// "permanent", "attempt N of M failed" or "deadline".
func deadReason(job *queue.Job, err error) string {
	switch {
	case queue.IsPermanent(err):
		return "permanent"
	case job.Attempt >= job.MaxAttempts:
		return fmt.Sprintf("attempt %d of %d failed", job.Attempt, job.MaxAttempts)
	}
	return "deadline"
}
