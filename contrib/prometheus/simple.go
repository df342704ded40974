package prometheus

import (
	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/ratelimit"
)

// StatsCache is what CacheCollector reads: every *cache.Cache[V] is one.
type StatsCache interface {
	Name() string
	Stats() cache.Stats
}

// CacheCollector exports caches' counters and local tier from
// cache.Cache.Stats, which reads no Redis: every number it counts.
type CacheCollector struct {
	invalid
	caches []StatsCache
	hits   metric // by tier
	mode   metric // bounded_cache_invalidation_info
	ms     []cacheMetric
}

// cacheMetric is one family of cache.Stats with one sample per cache.
type cacheMetric struct {
	metric
	v func(cache.Stats) float64
}

// NewCacheCollector returns a collector for caches, which must have
// distinct names.
func NewCacheCollector(caches ...StatsCache) *CacheCollector {
	u := func(f func(cache.Stats) uint64) func(cache.Stats) float64 {
		return func(s cache.Stats) float64 { return float64(f(s)) }
	}
	c := func(name, help string, f func(cache.Stats) uint64) cacheMetric {
		return cacheMetric{counter(name, help, "cache"), u(f)}
	}
	g := func(name, help string, f func(cache.Stats) float64) cacheMetric {
		return cacheMetric{gauge(name, help, "cache"), f}
	}
	return &CacheCollector{
		invalid: invalid{distinct("NewCacheCollector", "cache", caches, quoted[StatsCache])},
		caches:  caches,
		hits:    counter("bounded_cache_hits_total", "Reads answered by a tier (local or redis), negative entries included.", "cache", "tier"),
		mode:    gauge("bounded_cache_invalidation_info", "1 for how the invalidation subscriber hears of changes: mode pubsub or tracking (Config.TrackRawWrites); absent before it first connects.", "cache", "mode"),
		ms: []cacheMetric{
			c("bounded_cache_misses_total", "Reads that found the key in neither tier.", func(s cache.Stats) uint64 { return s.Misses }),
			c("bounded_cache_loads_total", "Loader calls made by this instance, refreshes included.", func(s cache.Stats) uint64 { return s.Loads }),
			c("bounded_cache_load_errors_total", "Loader calls that failed or returned a value that could not be written.", func(s cache.Stats) uint64 { return s.LoadErrors }),
			c("bounded_cache_load_waiters_total", "GetOrLoad callers that shared a load of this process.", func(s cache.Stats) uint64 { return s.LoadWaiters }),
			c("bounded_cache_loader_waits_total", "GetOrLoad calls that waited for a loader: their key was in neither tier.", func(s cache.Stats) uint64 { return s.LoaderWaits }),
			c("bounded_cache_refreshes_total", "Refresh-ahead loads this instance ran (Config.RefreshAfter); they count in loads too.", func(s cache.Stats) uint64 { return s.Refreshes }),
			c("bounded_cache_refresh_errors_total", "Refresh-ahead loads that failed; the old value serves on until its TTL.", func(s cache.Stats) uint64 { return s.RefreshErrors }),
			c("bounded_cache_refreshes_skipped_total", "Refreshes that were due but found no refresher or load slot free.", func(s cache.Stats) uint64 { return s.RefreshesSkipped }),
			c("bounded_cache_lock_waits_total", "Loads waited for because another instance held the load lock.", func(s cache.Stats) uint64 { return s.LockWaits }),
			g("bounded_cache_loads_in_flight", "Loads running now.", func(s cache.Stats) float64 { return float64(s.LoadsInFlight) }),
			c("bounded_cache_loads_refused_total", "GetOrLoad flights refused with ErrTooManyLoads.", func(s cache.Stats) uint64 { return s.LoadsRefused }),
			c("bounded_cache_decode_errors_total", "Values in Redis the codec could not decode.", func(s cache.Stats) uint64 { return s.DecodeErrors }),
			c("bounded_cache_redis_errors_total", "Redis calls that failed.", func(s cache.Stats) uint64 { return s.RedisErrors }),
			c("bounded_cache_evictions_total", "Local entries removed to keep the bounds.", func(s cache.Stats) uint64 { return s.Evictions }),
			c("bounded_cache_expirations_total", "Local entries removed because they expired.", func(s cache.Stats) uint64 { return s.Expirations }),
			c("bounded_cache_invalidations_sent_total", "Invalidation messages published.", func(s cache.Stats) uint64 { return s.InvalidationsSent }),
			c("bounded_cache_invalidations_received_total", "Invalidation messages applied from other instances.", func(s cache.Stats) uint64 { return s.InvalidationsReceived }),
			c("bounded_cache_bad_messages_total", "Invalidation messages that could not be read.", func(s cache.Stats) uint64 { return s.BadMessages }),
			c("bounded_cache_tracking_invalidations_total", "Client-side-caching invalidation messages applied (Config.TrackRawWrites).", func(s cache.Stats) uint64 { return s.TrackingInvalidations }),
			c("bounded_cache_tag_evictions_total", "Keys a tagged write evicted from a full tag (Config.MaxTagMembers), their values deleted.", func(s cache.Stats) uint64 { return s.TagEvictions }),
			c("bounded_cache_tag_invalidations_total", "InvalidateTag calls that finished.", func(s cache.Stats) uint64 { return s.TagInvalidations }),
			c("bounded_cache_tag_keys_invalidated_total", "Keys InvalidateTag calls removed.", func(s cache.Stats) uint64 { return s.TagKeysInvalidated }),
			c("bounded_cache_flushes_total", "Times the whole local tier was dropped.", func(s cache.Stats) uint64 { return s.Flushes }),
			c("bounded_cache_subscribes_total", "Subscriptions of the invalidation subscriber, the first included.", func(s cache.Stats) uint64 { return s.Subscribes }),
			g("bounded_cache_subscribed", "1 while the invalidation subscriber is listening.", func(s cache.Stats) float64 { return boolFloat(s.Subscribed) }),
			g("bounded_cache_local_entries", "Entries in the local tier now.", func(s cache.Stats) float64 { return float64(s.LocalEntries) }),
			g("bounded_cache_local_bytes", "Bytes in the local tier now (keys and encoded values).", func(s cache.Stats) float64 { return float64(s.LocalBytes) }),
		},
	}
}

// Describe implements prometheus.Collector.
func (c *CacheCollector) Describe(ch chan<- *prom.Desc) {
	if !c.describe(ch) {
		return
	}
	describe(ch, c.hits, c.mode)
	for _, m := range c.ms {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *CacheCollector) Collect(ch chan<- prom.Metric) {
	if !c.collect(ch) {
		return
	}
	for _, k := range c.caches {
		n, s := k.Name(), k.Stats()
		c.hits.emit(ch, float64(s.LocalHits), n, "local")
		c.hits.emit(ch, float64(s.RedisHits), n, "redis")
		if s.InvalidationMode != "" {
			c.mode.emit(ch, 1, n, s.InvalidationMode)
		}
		for _, m := range c.ms {
			m.emit(ch, m.v(s), n)
		}
	}
}

// LimiterCollector exports limiters' decisions from ratelimit.Limiter.Stats,
// which reads no Redis.
type LimiterCollector struct {
	invalid
	ls []*ratelimit.Limiter
	ms []metric
}

// NewLimiterCollector returns a collector for ls, which must have distinct
// names.
func NewLimiterCollector(ls ...*ratelimit.Limiter) *LimiterCollector {
	return &LimiterCollector{invalid: invalid{distinct("NewLimiterCollector", "limiter", ls, quoted[*ratelimit.Limiter])}, ls: ls, ms: []metric{
		counter("bounded_ratelimit_allowed_total", "Decisions that allowed the request, by the source that decided: redis, denied-cache (never allows) or fallback (Config.OnRedisError).", "limiter", "source"),
		counter("bounded_ratelimit_denied_total", "Decisions that denied the request, by the source that decided: redis, denied-cache or fallback (Config.OnRedisError).", "limiter", "source"),
		counter("bounded_ratelimit_redis_calls_total", "Scripts run in Redis.", "limiter"),
		counter("bounded_ratelimit_redis_errors_total", "Scripts that failed.", "limiter"),
		gauge("bounded_ratelimit_denied_keys", "Keys in the denied cache now.", "limiter"),
		counter("bounded_ratelimit_denied_key_evictions_total", "Live denied-cache entries dropped to make room.", "limiter"),
		gauge("bounded_ratelimit_local_keys", "FailLocal buckets now.", "limiter"),
		counter("bounded_ratelimit_local_key_evictions_total", "Live FailLocal buckets dropped to make room.", "limiter"),
	}}
}

// Describe implements prometheus.Collector.
func (c *LimiterCollector) Describe(ch chan<- *prom.Desc) {
	if c.describe(ch) {
		describe(ch, c.ms...)
	}
}

// Collect implements prometheus.Collector.
func (c *LimiterCollector) Collect(ch chan<- prom.Metric) {
	if !c.collect(ch) {
		return
	}
	for _, l := range c.ls {
		s, n := l.Stats(), l.Name()
		// Every source of ratelimit.Source, each counted directly.
		for _, v := range []struct {
			src             ratelimit.Source
			allowed, denied uint64
		}{
			{ratelimit.SourceRedis, s.RedisAllowed, s.RedisDenied},
			{ratelimit.SourceDeniedCache, 0, s.DeniedCache}, // the denied cache only denies
			{ratelimit.SourceFallback, s.FallbackAllowed, s.FallbackDenied},
		} {
			c.ms[0].emit(ch, float64(v.allowed), n, v.src.String())
			c.ms[1].emit(ch, float64(v.denied), n, v.src.String())
		}
		for i, v := range []float64{
			float64(s.RedisCalls), float64(s.RedisErrors), float64(s.DeniedKeys), float64(s.DeniedEvictions),
			float64(s.LocalKeys), float64(s.LocalEvictions),
		} {
			c.ms[i+2].emit(ch, v, n)
		}
	}
}

// MemwatchCollector exports a memwatch.Watcher's latest sample, active
// alerts, growth slope and counters. It takes no sample: before the
// Watcher's first one only the counters and alerts are exported.
type MemwatchCollector struct {
	w *memwatch.Watcher

	retained, heapLive, used, limit, goroutines, alerts, slope, longSlope metric
	counters                                                              []metric
}

// NewMemwatchCollector returns a collector for w.
func NewMemwatchCollector(w *memwatch.Watcher) *MemwatchCollector {
	return &MemwatchCollector{
		w:          w,
		retained:   gauge("bounded_memwatch_retained_bytes", "Memory the process would hold right after a collection, at the latest sample."),
		heapLive:   gauge("bounded_memwatch_heap_live_bytes", "Heap marked live by the last GC cycle, at the latest sample."),
		used:       gauge("bounded_memwatch_memory_used_bytes", "Memory the Go runtime holds (what GOMEMLIMIT governs), at the latest sample."),
		limit:      gauge("bounded_memwatch_memory_limit_bytes", "The runtime's soft memory limit, 0 when none is set."),
		goroutines: gauge("bounded_memwatch_goroutines", "Live goroutines at the latest sample."),
		alerts:     gauge("bounded_memwatch_alert_active", "1 while the alert of this kind is raised.", "kind"),
		slope:      gauge("bounded_memwatch_heap_growth_bytes_per_second", "Live-heap growth slope over the last growth window; absent until the window is full."),
		longSlope:  gauge("bounded_memwatch_heap_growth_long_bytes_per_second", "Live-heap growth slope since the growth alert last cleared; absent while no longer than the window."),
		counters: []metric{
			counter("bounded_memwatch_samples_total", "Samples taken."),
			counter("bounded_memwatch_alerts_raised_total", "Alerts raised."),
			counter("bounded_memwatch_alerts_dropped_total", "Alerts not delivered to a full subscription."),
			counter("bounded_memwatch_profiles_total", "Heap profiles captured."),
			counter("bounded_memwatch_profiles_rate_limited_total", "Heap profiles skipped by the rate limit."),
			counter("bounded_memwatch_profile_errors_total", "Heap profiles that failed."),
		},
	}
}

// Describe implements prometheus.Collector.
func (c *MemwatchCollector) Describe(ch chan<- *prom.Desc) {
	describe(ch, c.retained, c.heapLive, c.used, c.limit, c.goroutines, c.alerts, c.slope, c.longSlope)
	describe(ch, c.counters...)
}

// Collect implements prometheus.Collector.
func (c *MemwatchCollector) Collect(ch chan<- prom.Metric) {
	if s := c.w.Latest(); !s.Time.IsZero() {
		c.retained.emit(ch, float64(s.Retained()))
		c.heapLive.emit(ch, float64(s.HeapLive))
		c.used.emit(ch, float64(s.MemoryUsed))
		c.limit.emit(ch, float64(s.MemoryLimit))
		c.goroutines.emit(ch, float64(s.Goroutines))
	}
	active := map[memwatch.AlertKind]bool{}
	for _, a := range c.w.Active() {
		active[a.Kind] = true
	}
	for _, k := range []memwatch.AlertKind{memwatch.AlertMemoryHigh, memwatch.AlertGoroutines, memwatch.AlertHeapGrowth} {
		c.alerts.emit(ch, boolFloat(active[k]), string(k))
	}
	if t, ok := c.w.Trend(); ok {
		c.slope.emit(ch, t.BytesPerSecond)
	}
	if t, ok := c.w.LongTrend(); ok {
		c.longSlope.emit(ch, t.BytesPerSecond)
	}
	s := c.w.Stats()
	for i, v := range []uint64{s.Samples, s.AlertsRaised, s.AlertsDropped, s.Profiles, s.ProfilesRateLimited, s.ProfileErrors} {
		c.counters[i].emit(ch, float64(v))
	}
}
