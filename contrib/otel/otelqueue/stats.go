package otelqueue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/bounded-go/bounded/queue"
)

// StatsObserver reports queues' counts (queue.Queue.Stats) as observable
// gauges, read from Redis only when a metric reader collects: nothing runs
// between collections. Build it with ObserveStats; close it to unregister.
// It is safe for concurrent use.
type StatsObserver struct {
	qs      []*queue.Queue
	timeout time.Duration
	attrs   []metric.ObserveOption
	reg     metric.Registration

	refresh sync.Mutex // held while reading Redis

	mu     sync.Mutex // guards last and errors
	last   []cachedStats
	errors []int64

	ready, delayed, inFlight, dead, consumers metric.Int64ObservableGauge
	age                                       metric.Float64ObservableGauge
	readErrors                                metric.Int64ObservableCounter
}

type cachedStats struct {
	s  queue.Stats
	at time.Time // zero: never read
}

// ObserveStats registers, on the meter provider (WithMeterProvider), one
// callback that reports qs's counts with the attributes
// messaging.destination.name and bounded.queue.namespace (AttrNamespace):
//
//	bounded.queue.jobs.ready, .delayed, .in_flight, .dead   {job}
//	bounded.queue.consumers                                 {consumer}
//	bounded.queue.stats.age     seconds since the counts reported were read
//	bounded.queue.stats.errors  collections whose read of the queue failed
//
// A collection reads the queues one after another, within
// WithStatsTimeout for all of them (default DefaultStatsTimeout), through
// the pool's request lane. A queue whose read fails or times out reports
// its last counts (bounded.queue.stats.age says how old); one never read
// reports only bounded.queue.stats.errors. A collection that starts while
// another reads Redis reports the cached counts without reading. A queue
// (a name in a namespace) must appear once; queues of one name in two
// namespaces are two series. A nil queue is an error.
func ObserveStats(qs []*queue.Queue, opts ...Option) (*StatsObserver, error) {
	seen := map[queueKey]bool{}
	for i, q := range qs {
		if q == nil {
			return nil, fmt.Errorf("otelqueue: ObserveStats: queue %d is nil", i)
		}
		k := queueKey{ns: q.Namespace(), name: q.Name()}
		if seen[k] {
			return nil, fmt.Errorf("otelqueue: ObserveStats: queue %q of namespace %q appears twice", q.Name(), q.Namespace())
		}
		seen[k] = true
	}
	c := newConfig(opts)
	m := c.mp.Meter(ScopeName)
	o := &StatsObserver{
		qs:      append([]*queue.Queue(nil), qs...),
		timeout: c.statsTimeout,
		last:    make([]cachedStats, len(qs)),
		errors:  make([]int64, len(qs)),
	}
	for _, q := range qs {
		o.attrs = append(o.attrs, metric.WithAttributeSet(attribute.NewSet(baseAttrs(q.Namespace(), q.Name())...)))
	}
	var errs []error
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	o.ready = gauge("bounded.queue.jobs.ready", "{job}", "Jobs ready to run.")
	o.delayed = gauge("bounded.queue.jobs.delayed", "{job}", "Jobs delayed or waiting to retry.")
	o.inFlight = gauge("bounded.queue.jobs.in_flight", "{job}", "Jobs fetched and not yet acked, by any consumer.")
	o.dead = gauge("bounded.queue.jobs.dead", "{job}", "Jobs in the dead letters.")
	o.consumers = gauge("bounded.queue.consumers", "{consumer}", "Consumers with a processing list.")
	var err error
	o.age, err = m.Float64ObservableGauge("bounded.queue.stats.age", metric.WithUnit("s"),
		metric.WithDescription("Age of the counts reported: 0 when read by this collection."))
	errs = append(errs, err)
	o.readErrors, err = m.Int64ObservableCounter("bounded.queue.stats.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Collections whose Redis read of the queue failed or timed out."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otelqueue: ObserveStats: %w", err)
	}
	o.reg, err = m.RegisterCallback(o.observe, o.ready, o.delayed, o.inFlight, o.dead, o.consumers, o.age, o.readErrors)
	if err != nil {
		return nil, fmt.Errorf("otelqueue: ObserveStats: %w", err)
	}
	return o, nil
}

// Close unregisters the callback: later collections report nothing of the
// queues. It is idempotent.
func (o *StatsObserver) Close() error {
	o.mu.Lock()
	reg := o.reg
	o.reg = nil
	o.mu.Unlock()
	if reg == nil {
		return nil
	}
	return reg.Unregister()
}

// observe is the callback: read Redis (unless another collection is), then
// report the cache.
func (o *StatsObserver) observe(ctx context.Context, obs metric.Observer) error {
	if o.refresh.TryLock() {
		o.read(ctx)
		o.refresh.Unlock()
	}
	now := time.Now()
	o.mu.Lock()
	last := append([]cachedStats(nil), o.last...)
	errs := append([]int64(nil), o.errors...)
	o.mu.Unlock()
	for i := range o.qs {
		a := o.attrs[i]
		obs.ObserveInt64(o.readErrors, errs[i], a)
		l := last[i]
		if l.at.IsZero() {
			continue
		}
		obs.ObserveInt64(o.ready, l.s.Ready, a)
		obs.ObserveInt64(o.delayed, l.s.Delayed, a)
		obs.ObserveInt64(o.inFlight, l.s.InFlight, a)
		obs.ObserveInt64(o.dead, l.s.Dead, a)
		obs.ObserveInt64(o.consumers, int64(l.s.Consumers), a)
		obs.ObserveFloat64(o.age, max(now.Sub(l.at), 0).Seconds(), a)
	}
	return nil
}

// read refreshes the cache, queue by queue, within one timeout (and ctx,
// the collection's).
func (o *StatsObserver) read(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	for i, q := range o.qs {
		s, err := q.Stats(ctx)
		o.mu.Lock()
		if err != nil {
			o.errors[i]++
		} else {
			s.Local = nil
			o.last[i] = cachedStats{s: s, at: time.Now()}
		}
		o.mu.Unlock()
	}
}
