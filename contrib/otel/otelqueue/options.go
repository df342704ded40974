package otelqueue

import (
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/bounded-go/bounded/contrib/otel/otelqueue"

// DefaultStatsTimeout bounds the Redis reads of one collection of
// ObserveStats when WithStatsTimeout is not given.
const DefaultStatsTimeout = time.Second

// An Option configures a Producer, a Handler or ObserveStats; each ignores
// the options that do not concern it.
type Option func(*config)

type config struct {
	tp           trace.TracerProvider
	mp           metric.MeterProvider
	prop         propagation.TextMapPropagator
	newRoot      bool
	statsTimeout time.Duration
}

func newConfig(opts []Option) config {
	c := config{statsTimeout: DefaultStatsTimeout}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	// The providers default to the global ones, read now: as with the
	// OpenTelemetry contrib instrumentations, set them before building.
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = propagation.TraceContext{}
	}
	return c
}

// WithTracerProvider sets the tracer provider (default: the global one,
// otel.GetTracerProvider, when the Producer or Handler is built).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets the meter provider (default: the global one,
// otel.GetMeterProvider, when the Producer, Handler or observer is built).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithPropagator sets how the trace context travels in the job's headers
// (default: propagation.TraceContext, the W3C traceparent and tracestate;
// otel.GetTextMapPropagator() uses the process's global one, with baggage
// for instance). Producer and Handler must agree.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

// WithNewRoot makes the consumer span the root of a trace of its own,
// linked to the producer span, instead of its child. Use it when jobs run
// long after they were enqueued (delays, retries over hours) and the
// request's trace should not stretch to cover them.
func WithNewRoot() Option {
	return func(c *config) { c.newRoot = true }
}

// WithStatsTimeout bounds the Redis reads of one collection of
// ObserveStats, all queues together (default DefaultStatsTimeout).
// d <= 0 means the default.
func WithStatsTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.statsTimeout = d
		}
	}
}
