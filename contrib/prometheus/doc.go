// Package prometheus exports the state of bounded's components as
// Prometheus metrics: one prometheus.Collector per kind of component, which
// the program builds and registers itself (nothing registers on import, and
// nothing here runs between scrapes).
//
//   - PoolCollector: each lane's size, connections in use, open and idle,
//     callers waiting, waits, wait timeouts, rejections, dials, dial errors
//     and a wait-time histogram (label lane), and the health state.
//   - QueueCollector: each queue's ready, delayed, in-flight and dead jobs,
//     consumers, refused enqueues and the oldest ready job's age (labels
//     queue and queue_namespace), read from Redis at scrape time; and this
//     process's workers' counters (processed, failed, retried,
//     dead-lettered, ...) and enqueue-to-start and run-duration
//     histograms, summed per queue (a name in a namespace).
//   - CacheCollector: hits by tier, misses, loads, load errors, evictions,
//     local entries and bytes, ... (label cache).
//   - LimiterCollector: allowed and denied decisions by source (labels
//     limiter and source), Redis calls and errors (label limiter).
//   - MemwatchCollector: the latest sample (retained memory, live heap,
//     goroutines, ...), active alerts (label kind), the growth slopes and
//     the Watcher's counters.
//
// Names start with bounded_; counters, and only values that never decrease
// in the component, end in _total; sizes are in bytes and durations in
// seconds. Histograms share fixed buckets (1-2-5 steps from 10µs to
// 5000s), so that series add up across processes. Each label value comes
// from the component's Name (and a queue's Namespace): a collector given
// two components of one kind with the same labels (two queues of one name
// in one namespace, two caches or limiters of one name) describes only an
// error naming them, so that Register refuses it (MustRegister panics)
// instead of every Gather failing.
//
// # Redis at scrape time
//
// Only QueueCollector reads Redis: queue.Queue.Stats for each queue, one
// after another, within QueueConfig.Timeout for all of them (default
// DefaultScrapeTimeout), through the pool's request lane. A queue whose
// read fails or times out keeps its last value, bounded_queue_stats_age_seconds
// says how old it is and bounded_queue_scrape_errors_total counts the
// failure; a queue never read exports only that counter. A scrape that
// starts while another one reads Redis exports the cached values without
// reading. Every other collector reads counters in the process and never
// blocks.
//
// # Concurrency and lifetime
//
// Collectors are safe for concurrent use and hold no resources: there is
// nothing to close. They must not outlive the components they read (a
// closed pool's queues report scrape errors). The zero value of a
// collector is not usable: build one with its New function. A nil cache,
// limiter or queue is refused as two with one name are: Register returns
// an error that names it. A nil pool or watcher makes Collect panic.
//
// See docs/prometheus.md for the metric list, the histograms, the
// benchmarks and the Grafana dashboard; examples/chatservice serves
// /metrics with every collector (its metrics.go is the wiring).
package prometheus
