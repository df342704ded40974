package otelqueue

import (
	"context"
	"errors"
	"sort"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/bounded-go/bounded/queue"
)

// systemName is the value of messaging.system.
const systemName = "bounded"

var (
	attrSystem      = semconv.MessagingSystemKey.String(systemName)
	attrOpSend      = semconv.MessagingOperationTypeSend
	attrOpNameSend  = semconv.MessagingOperationName("send")
	attrOpProcess   = semconv.MessagingOperationTypeProcess
	attrOpNameProcs = semconv.MessagingOperationName("process")
)

// Producer enqueues jobs in a producer span and puts the span's trace
// context in their headers, for Handler to continue the trace.
//
// Build it with NewProducer; the zero value is not usable. It is safe for
// concurrent use, holds no resources and needs no closing; one Producer
// serves any number of queues.
type Producer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	sent   metric.Int64Counter
	dur    metric.Float64Histogram // messaging.client.operation.duration
}

// NewProducer returns a Producer. It uses WithTracerProvider,
// WithMeterProvider and WithPropagator. Each Enqueue or EnqueueBatch
// records messaging.client.sent.messages (the jobs) and
// messaging.client.operation.duration (the call, in seconds), with
// error.type when it failed.
func NewProducer(opts ...Option) *Producer {
	c := newConfig(opts)
	m := c.mp.Meter(ScopeName)
	sent, err := m.Int64Counter("messaging.client.sent.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Jobs the producer tried to enqueue."))
	if err != nil {
		sent = noopCounter
	}
	dur := histogram(m, "messaging.client.operation.duration", "Duration of an enqueue (a send) by the producer.")
	return &Producer{tracer: c.tp.Tracer(ScopeName), prop: c.prop, sent: sent, dur: dur}
}

// Enqueue is q.Enqueue in a producer span named "send <queue>", with the
// span's trace context added to the job's headers. The span records the
// job's ID, or the error. A header of opts with the same key wins over the
// trace context; when the headers of opts leave it no room (the queue's
// MaxHeaders and MaxHeaderBytes), the job is enqueued without it
// (EventContextDropped): tracing never fails an enqueue that q.Enqueue
// accepts.
func (p *Producer) Enqueue(ctx context.Context, q *queue.Queue, payload []byte, opts ...queue.EnqueueOption) (string, error) {
	start := time.Now()
	ctx, span := p.start(ctx, q, attribute.Int(string(semconv.MessagingMessageBodySizeKey), len(payload)))
	withCtx := p.withContext(ctx, opts)
	id, err := q.Enqueue(ctx, payload, withCtx...)
	if dropContext(span, withCtx, opts, err, false) {
		id, err = q.Enqueue(ctx, payload, opts...)
	}
	if id != "" {
		span.SetAttributes(semconv.MessagingMessageID(id))
	}
	p.end(ctx, span, q, 1, start, err)
	return id, err
}

// EnqueueBatch is q.EnqueueBatch in one producer span, every job carrying
// its trace context.
func (p *Producer) EnqueueBatch(ctx context.Context, q *queue.Queue, payloads [][]byte, opts ...queue.EnqueueOption) ([]string, error) {
	start := time.Now()
	ctx, span := p.start(ctx, q, semconv.MessagingBatchMessageCount(len(payloads)))
	withCtx := p.withContext(ctx, opts)
	ids, err := q.EnqueueBatch(ctx, payloads, withCtx...)
	if dropContext(span, withCtx, opts, err, true) {
		ids, err = q.EnqueueBatch(ctx, payloads, opts...)
	}
	p.end(ctx, span, q, len(payloads), start, err)
	return ids, err
}

func (p *Producer) start(ctx context.Context, q *queue.Queue, attr attribute.KeyValue) (context.Context, trace.Span) {
	return p.tracer.Start(ctx, "send "+q.Name(), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(append(baseAttrs(q.Namespace(), q.Name()), attrOpSend, attrOpNameSend, attr)...))
}

func (p *Producer) end(ctx context.Context, span trace.Span, q *queue.Queue, n int, start time.Time, err error) {
	attrs := append(baseAttrs(q.Namespace(), q.Name()), attrOpNameSend)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		attrs = append(attrs, semconv.ErrorType(err))
	}
	span.End()
	set := metric.WithAttributeSet(attribute.NewSet(attrs...))
	p.sent.Add(ctx, int64(n), set)
	p.dur.Record(ctx, time.Since(start).Seconds(), set)
}

// EventContextDropped: the send span's event when the job's own headers
// left no room for the trace context (queue.MaxHeaders, MaxHeaderBytes),
// or it would push a batch past Config.MaxBatchBytes: the job is enqueued
// without it, as q.Enqueue would, and its run starts a trace of its own.
const EventContextDropped = "trace_context_dropped"

// dropContext reports whether an enqueue that failed with the trace context
// is to be tried again without it: when the trace context was added and the
// queue refused the job before writing anything, for a reason the trace
// context may have caused (headers over the bounds; a batch over its
// bytes). Tried again, a job that the queue refuses by itself fails with
// the queue's own error. It records EventContextDropped on span.
func dropContext(span trace.Span, withCtx, opts []queue.EnqueueOption, err error, batch bool) bool {
	if err == nil || len(withCtx) == len(opts) {
		return false
	}
	if !errors.Is(err, queue.ErrInvalidHeader) && !(batch && errors.Is(err, queue.ErrBatchTooLarge)) {
		return false
	}
	span.AddEvent(EventContextDropped, trace.WithAttributes(semconv.ErrorType(err), AttrError.String(err.Error())))
	return true
}

// withContext returns opts with the trace context first, so that the
// caller's headers win.
func (p *Producer) withContext(ctx context.Context, opts []queue.EnqueueOption) []queue.EnqueueOption {
	h := p.Inject(ctx)
	if h == nil {
		return opts
	}
	return append([]queue.EnqueueOption{h}, opts...)
}

// Inject returns an enqueue option that puts ctx's trace context in the
// job's headers, without a span of its own: for a caller that enqueues
// through its own code. It returns nil (an option Enqueue skips) when ctx
// carries no trace context. Entries the queue would refuse (queue.CheckHeader)
// are left out, and so are those past the queue's bounds (the W3C
// traceparent and tracestate first, then the others by key). The entries
// count toward the job's bounds with the caller's own headers: a caller
// whose headers may fill them leaves room, or uses Producer.Enqueue, which
// drops the trace context when there is none.
func (p *Producer) Inject(ctx context.Context) queue.EnqueueOption {
	carrier := propagation.MapCarrier{}
	p.prop.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return nil
	}
	return queue.Headers(bounded(carrier))
}

// bounded keeps of h what the queue accepts, within its bounds.
func bounded(h map[string]string) map[string]string {
	keys := make([]string, 0, len(h))
	for k, v := range h {
		if queue.CheckHeader(k, v) == nil {
			keys = append(keys, k)
		}
	}
	rank := func(k string) int {
		switch k {
		case "traceparent":
			return 0
		case "tracestate":
			return 1
		}
		return 2
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	out := make(map[string]string, len(keys))
	size := 0
	for _, k := range keys {
		n := len(k) + len(h[k])
		if len(out) == queue.MaxHeaders || size+n > queue.MaxHeaderBytes {
			continue
		}
		out[k], size = h[k], size+n
	}
	return out
}
