// Package otelcache reports bounded's caches' counters (cache.Cache.Stats)
// through the OpenTelemetry metrics API, as contrib/prometheus's
// CacheCollector does for Prometheus: every number cache.Stats counts, read
// only when a metric reader collects (Stats reads no Redis), never on a
// timer.
//
// ObserveCaches registers one callback on the meter; Close unregisters it.
// A CacheObserver is safe for concurrent use. See docs/otel.md.
package otelcache

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/bounded-go/bounded/cache"
)

// ScopeName is the instrumentation scope of the meter.
const ScopeName = "github.com/bounded-go/bounded/contrib/otel/otelcache"

// Attribute keys.
const (
	AttrCache = attribute.Key("bounded.cache.name") // the cache's Name, on every measurement
	AttrTier  = attribute.Key("bounded.cache.tier") // on bounded.cache.hits: "local" or "redis"
	AttrMode  = attribute.Key("bounded.cache.invalidation.mode")
)

// StatsCache is what ObserveCaches reads: every *cache.Cache[V] is one.
type StatsCache interface {
	Name() string
	Stats() cache.Stats
}

// An Option configures ObserveCaches.
type Option func(*config)

type config struct{ mp metric.MeterProvider }

// WithMeterProvider sets the meter provider (default: the global one,
// otel.GetMeterProvider, when ObserveCaches is called).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// CacheObserver reports caches' Stats at each collection. Build it with
// ObserveCaches; Close it to unregister.
type CacheObserver struct {
	caches []StatsCache
	attrs  []attribute.Set // per cache: AttrCache

	mu  sync.Mutex // guards reg
	reg metric.Registration

	hitsC, mode metric.Int64Observable
	counters    []observed
}

// observed is one instrument and the number of cache.Stats it reports.
type observed struct {
	inst metric.Int64Observable
	v    func(cache.Stats) int64
}

// ObserveCaches registers, on the meter provider, one callback that
// reports caches' Stats with the attribute bounded.cache.name: counters
// (bounded.cache.hits by bounded.cache.tier, .misses, .loads,
// .load_errors, .load_waiters, .loader_waits, .refreshes,
// .refresh_errors, .refreshes_skipped, .lock_waits, .loads_refused,
// .decode_errors, .redis_errors, .evictions, .expirations,
// .invalidations.sent, .invalidations.received,
// .invalidations.tracking, .bad_messages, .tag.evictions,
// .tag.invalidations, .tag.keys_invalidated, .flushes, .subscribes) and
// gauges (bounded.cache.loads.in_flight, .subscribed, .local.entries,
// .local.bytes, and bounded.cache.invalidation.mode, 1 with the mode as
// an attribute once the subscriber connected). Names must be distinct; a
// nil cache is an error.
func ObserveCaches(caches []StatsCache, opts ...Option) (*CacheObserver, error) {
	seen := map[string]int{}
	for i, k := range caches {
		if isNil(k) {
			return nil, fmt.Errorf("otelcache: ObserveCaches: cache %d is nil", i)
		}
		if j, ok := seen[k.Name()]; ok {
			return nil, fmt.Errorf("otelcache: ObserveCaches: caches %d and %d are both named %q: names must be distinct", j, i, k.Name())
		}
		seen[k.Name()] = i
	}
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	m := c.mp.Meter(ScopeName)
	o := &CacheObserver{caches: append([]StatsCache(nil), caches...)}
	for _, k := range caches {
		o.attrs = append(o.attrs, attribute.NewSet(AttrCache.String(k.Name())))
	}
	var errs []error
	ctr := func(name, unit, desc string, v func(cache.Stats) uint64) {
		i, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		o.counters = append(o.counters, observed{i, func(s cache.Stats) int64 { return int64(v(s)) }})
	}
	gauge := func(name, unit, desc string, v func(cache.Stats) int64) {
		i, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		o.counters = append(o.counters, observed{i, v})
	}
	var err error
	o.hitsC, err = m.Int64ObservableCounter("bounded.cache.hits", metric.WithUnit("{read}"),
		metric.WithDescription("Reads answered by a tier (bounded.cache.tier local or redis), negative entries included."))
	errs = append(errs, err)
	o.mode, err = m.Int64ObservableGauge("bounded.cache.invalidation.mode", metric.WithUnit("1"),
		metric.WithDescription("1 with how the invalidation subscriber hears of changes (pubsub or tracking); absent before it first connects."))
	errs = append(errs, err)
	ctr("bounded.cache.misses", "{read}", "Reads that found the key in neither tier.", func(s cache.Stats) uint64 { return s.Misses })
	ctr("bounded.cache.loads", "{load}", "Loader calls made by this instance, refreshes included.", func(s cache.Stats) uint64 { return s.Loads })
	ctr("bounded.cache.load_errors", "{load}", "Loader calls that failed or returned a value that could not be written.", func(s cache.Stats) uint64 { return s.LoadErrors })
	ctr("bounded.cache.load_waiters", "{call}", "GetOrLoad callers that shared a load of this process.", func(s cache.Stats) uint64 { return s.LoadWaiters })
	ctr("bounded.cache.loader_waits", "{call}", "GetOrLoad calls that waited for a loader.", func(s cache.Stats) uint64 { return s.LoaderWaits })
	ctr("bounded.cache.refreshes", "{load}", "Refresh-ahead loads this instance ran.", func(s cache.Stats) uint64 { return s.Refreshes })
	ctr("bounded.cache.refresh_errors", "{load}", "Refresh-ahead loads that failed.", func(s cache.Stats) uint64 { return s.RefreshErrors })
	ctr("bounded.cache.refreshes_skipped", "{refresh}", "Refreshes due that found no refresher or load slot free.", func(s cache.Stats) uint64 { return s.RefreshesSkipped })
	ctr("bounded.cache.lock_waits", "{load}", "Loads waited for because another instance held the load lock.", func(s cache.Stats) uint64 { return s.LockWaits })
	ctr("bounded.cache.loads_refused", "{load}", "GetOrLoad flights refused with ErrTooManyLoads.", func(s cache.Stats) uint64 { return s.LoadsRefused })
	ctr("bounded.cache.decode_errors", "{value}", "Values in Redis the codec could not decode.", func(s cache.Stats) uint64 { return s.DecodeErrors })
	ctr("bounded.cache.redis_errors", "{call}", "Redis calls that failed.", func(s cache.Stats) uint64 { return s.RedisErrors })
	ctr("bounded.cache.evictions", "{entry}", "Local entries removed to keep the bounds.", func(s cache.Stats) uint64 { return s.Evictions })
	ctr("bounded.cache.expirations", "{entry}", "Local entries removed because they expired.", func(s cache.Stats) uint64 { return s.Expirations })
	ctr("bounded.cache.invalidations.sent", "{message}", "Invalidation messages published.", func(s cache.Stats) uint64 { return s.InvalidationsSent })
	ctr("bounded.cache.invalidations.received", "{message}", "Invalidation messages applied from other instances.", func(s cache.Stats) uint64 { return s.InvalidationsReceived })
	ctr("bounded.cache.invalidations.tracking", "{message}", "Client-side-caching invalidation messages applied.", func(s cache.Stats) uint64 { return s.TrackingInvalidations })
	ctr("bounded.cache.bad_messages", "{message}", "Invalidation messages that could not be read.", func(s cache.Stats) uint64 { return s.BadMessages })
	ctr("bounded.cache.tag.evictions", "{key}", "Keys a tagged write evicted from a full tag, their values deleted.", func(s cache.Stats) uint64 { return s.TagEvictions })
	ctr("bounded.cache.tag.invalidations", "{call}", "InvalidateTag calls that finished.", func(s cache.Stats) uint64 { return s.TagInvalidations })
	ctr("bounded.cache.tag.keys_invalidated", "{key}", "Keys InvalidateTag calls removed.", func(s cache.Stats) uint64 { return s.TagKeysInvalidated })
	ctr("bounded.cache.flushes", "{flush}", "Times the whole local tier was dropped.", func(s cache.Stats) uint64 { return s.Flushes })
	ctr("bounded.cache.subscribes", "{subscription}", "Subscriptions of the invalidation subscriber, the first included.", func(s cache.Stats) uint64 { return s.Subscribes })
	gauge("bounded.cache.loads.in_flight", "{load}", "Loads running now.", func(s cache.Stats) int64 { return int64(s.LoadsInFlight) })
	gauge("bounded.cache.subscribed", "1", "1 while the invalidation subscriber is listening.", func(s cache.Stats) int64 {
		if s.Subscribed {
			return 1
		}
		return 0
	})
	gauge("bounded.cache.local.entries", "{entry}", "Entries in the local tier now.", func(s cache.Stats) int64 { return s.LocalEntries })
	gauge("bounded.cache.local.bytes", "By", "Bytes in the local tier now (keys and encoded values).", func(s cache.Stats) int64 { return s.LocalBytes })
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otelcache: ObserveCaches: %w", err)
	}
	insts := []metric.Observable{o.hitsC, o.mode}
	for _, c := range o.counters {
		insts = append(insts, c.inst)
	}
	o.reg, err = m.RegisterCallback(o.observe, insts...)
	if err != nil {
		return nil, fmt.Errorf("otelcache: ObserveCaches: %w", err)
	}
	return o, nil
}

// isNil reports whether k is nil: a nil interface, or one holding a nil
// pointer (a *cache.Cache whose New failed), whose Name would panic.
func isNil(k StatsCache) bool {
	if k == nil {
		return true
	}
	v := reflect.ValueOf(k)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// Close unregisters the callback: later collections report nothing of the
// caches. It is idempotent.
func (o *CacheObserver) Close() error {
	o.mu.Lock()
	reg := o.reg
	o.reg = nil
	o.mu.Unlock()
	if reg == nil {
		return nil
	}
	return reg.Unregister()
}

func (o *CacheObserver) observe(_ context.Context, obs metric.Observer) error {
	for i, k := range o.caches {
		s, set := k.Stats(), o.attrs[i]
		name := set.ToSlice()[0]
		obs.ObserveInt64(o.hitsC, int64(s.LocalHits), metric.WithAttributes(name, AttrTier.String("local")))
		obs.ObserveInt64(o.hitsC, int64(s.RedisHits), metric.WithAttributes(name, AttrTier.String("redis")))
		if s.InvalidationMode != "" {
			obs.ObserveInt64(o.mode, 1, metric.WithAttributes(name, AttrMode.String(s.InvalidationMode)))
		}
		a := metric.WithAttributeSet(set)
		for _, c := range o.counters {
			obs.ObserveInt64(c.inst, c.v(s), a)
		}
	}
	return nil
}
