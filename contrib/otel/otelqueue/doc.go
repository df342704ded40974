// Package otelqueue traces and measures bounded's queues with
// OpenTelemetry: a producer span around each enqueue, whose W3C trace
// context travels in the job's headers (queue.Header) to a consumer span
// around each run, and the queue's metrics through the OTel metrics API.
//
//   - Producer.Enqueue and Producer.EnqueueBatch: q.Enqueue in a span
//     "send <queue>" (kind producer) that puts its trace context in the
//     job's headers; Producer.Inject returns that header option alone.
//   - NewHandler (or Handler): wraps a queue.Handler; each run is a span "process <queue>"
//     (kind consumer), the child of the producer span (or, with
//     WithNewRoot, linked to it), with the error and an event for a retry
//     (EventRetry), the dead letters (EventDeadLetter) or a cancel by
//     Queue.Cancel (EventCancelled); and the run's
//     duration, the wait from enqueue to the first start, and processed
//     and failed counters.
//   - ObserveStats: observable gauges of queue.Queue.Stats (ready,
//     delayed, in flight, dead, consumers), read from Redis only when a
//     metric reader collects, within a timeout, with the last counts kept
//     when a read fails; never on a timer.
//
// Spans follow the messaging semantic conventions (messaging.system
// "bounded", messaging.destination.name the queue's name,
// messaging.message.id the job's ID, messaging.operation.type "send" or
// "process"); spans and measurements carry the queue's namespace
// (AttrNamespace), so queues of one name in two namespaces stay apart. The tracer and meter providers default to the global ones
// at the time a Producer, Handler or StatsObserver is built; the
// propagator defaults to propagation.TraceContext (WithPropagator).
//
// A job without a trace context (tracing off, or enqueued without a
// Producer) carries no header and costs the queue nothing more; its run
// starts a span of its own if tracing is on.
//
// Producer is safe for concurrent use and holds no resources. An
// Instrumented handler (NewHandler) and a StatsObserver are safe for
// concurrent use and hold a callback registration on the meter: Close
// them when their worker or queues are done. Handler's wrapper releases
// its registration when it is garbage collected.
//
// See docs/otel.md for the names, the costs and the example.
package otelqueue
