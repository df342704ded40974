package prometheus

import (
	"context"
	"fmt"
	"sync"
	"time"
	"weak"

	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// DefaultScrapeTimeout bounds the Redis reads of one QueueCollector scrape
// when QueueConfig.Timeout is zero.
const DefaultScrapeTimeout = time.Second

// QueueConfig says which queues and workers a QueueCollector exports.
type QueueConfig struct {
	// Queues have their counts read from Redis at each scrape
	// (queue.Queue.Stats). A queue (a name in a namespace) must appear
	// once; queues of one name in two namespaces are two queues (label
	// queue_namespace).
	Queues []*queue.Queue
	// Workers have their counters read from the process
	// (queue.Worker.Stats); several workers of one queue (one name in one
	// namespace) are summed.
	Workers []*queue.Worker
	// LiveWorkers, if set, is called at each scrape for more workers to
	// export with Workers: a program that replaces its workers (a
	// restarted worker is a new *queue.Worker) returns the current ones,
	// and the collector follows them. A worker that left the list keeps
	// counting in the sums with its counters and histograms as they were
	// at the last scrape that saw it, so that the exported counters never
	// go down (what it counted after that scrape is not exported, unless
	// it comes back: a worker listed again counts once, from its own
	// counters).
	// LiveWorkers must be quick and safe for concurrent use; scrapes call
	// it one at a time.
	LiveWorkers func() []*queue.Worker
	// Timeout bounds the Redis reads of one scrape, all queues together.
	// Zero means DefaultScrapeTimeout.
	Timeout time.Duration
}

// QueueCollector exports queues' counts, read from Redis only when
// scraped, and their workers' counters. A queue whose read fails or does
// not finish within the timeout is exported with its last value read,
// bounded_queue_stats_age_seconds tells how old that is, and
// bounded_queue_scrape_errors_total counts the failure; a queue never read
// exports only the latter. At most one scrape reads Redis at a time: a
// scrape that starts while another is reading exports the cached values.
type QueueCollector struct {
	invalid
	cfg     QueueConfig
	refresh sync.Mutex // held while reading Redis

	mu     sync.Mutex // guards last and errors
	last   []cached
	errors []uint64

	ready, delayed, inFlight, dead, consumers, refused, age, scrapeErrors metric
	oldest                                                                metric
	busy, concurrency, startDelay, run                                    metric
	workerCounters                                                        []metric

	wmu     sync.Mutex // guards seen, retired and gone; held by collectWorkers
	seen    map[*queue.Worker]workerSnap
	retired map[queueKey]*workerSum // by queue: the workers that left LiveWorkers
	// gone are the workers whose counts are in retired, by weak pointer
	// (an entry keeps no worker alive, and is dropped once its worker is
	// collected): one that LiveWorkers lists again leaves retired, else
	// its counts were summed twice.
	gone map[weak.Pointer[queue.Worker]]workerSnap
}

// workerSnap is a worker's counters at the last scrape that saw it.
type workerSnap struct {
	queue queueKey
	sum   workerSum
}

// queueKey is what labels a queue's samples: its name and namespace.
type queueKey struct{ name, ns string }

func keyOf(q *queue.Queue) queueKey { return queueKey{name: q.Name(), ns: q.Namespace()} }

// workerSum is what the workers of one queue add up to.
type workerSum struct {
	busy, conc      float64
	v               [11]uint64
	startDelay, run pool.Histogram
}

// addCounts adds o's counters and histograms (not its gauges) to t.
func (t *workerSum) addCounts(o *workerSum) {
	for i := range t.v {
		t.v[i] += o.v[i]
	}
	t.startDelay.Add(o.startDelay)
	t.run.Add(o.run)
}

// subCounts takes from t o's counters and histograms, which addCounts
// added to it before.
func (t *workerSum) subCounts(o *workerSum) {
	for i := range t.v {
		t.v[i] -= o.v[i]
	}
	for _, h := range [][2]*pool.Histogram{{&t.startDelay, &o.startDelay}, {&t.run, &o.run}} {
		for i := range min(len(h[0].Counts), len(h[1].Counts)) {
			h[0].Counts[i] -= h[1].Counts[i]
		}
		h[0].Count -= h[1].Count
		h[0].Sum -= h[1].Sum
	}
}

type cached struct {
	s  queue.Stats
	at time.Time // zero: never read
}

// NewQueueCollector returns a collector for cfg's queues and workers.
func NewQueueCollector(cfg QueueConfig) *QueueCollector {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultScrapeTimeout
	}
	l := []string{"queue", "queue_namespace"} // not "namespace": see TestQueueLabelsAreNotTargetLabels
	return &QueueCollector{
		invalid: invalid{distinct("NewQueueCollector", "queue", cfg.Queues, func(q *queue.Queue) string {
			return fmt.Sprintf("%q in namespace %q", q.Name(), q.Namespace())
		})},
		cfg:          cfg,
		last:         make([]cached, len(cfg.Queues)),
		errors:       make([]uint64, len(cfg.Queues)),
		ready:        gauge("bounded_queue_ready_jobs", "Jobs ready to run.", l...),
		delayed:      gauge("bounded_queue_delayed_jobs", "Jobs delayed or waiting to retry.", l...),
		inFlight:     gauge("bounded_queue_in_flight_jobs", "Jobs fetched and not yet acked, by any consumer.", l...),
		dead:         gauge("bounded_queue_dead_jobs", "Jobs in the dead letters.", l...),
		consumers:    gauge("bounded_queue_consumers", "Consumers with a processing list.", l...),
		refused:      counter("bounded_queue_refused_total", "Enqueues refused as full, by any process, as counted in Redis.", l...),
		age:          gauge("bounded_queue_stats_age_seconds", "Age of the counts exported: 0 when read by this scrape.", l...),
		scrapeErrors: counter("bounded_queue_scrape_errors_total", "Scrapes whose Redis read of the queue failed or timed out.", l...),
		oldest:       gauge("bounded_queue_oldest_ready_age_seconds", "Age of the job fetched next (the oldest ready one) since its enqueue, when the counts were read; 0 when none is ready.", l...),
		startDelay:   histogram("bounded_queue_start_delay_seconds", "Time from a job's enqueue to its first run's start in this process (a delayed job's includes its delay; retries are left out).", l...),
		run:          histogram("bounded_queue_run_duration_seconds", "Duration of each handler call in this process, failed ones included.", l...),
		busy:         gauge("bounded_queue_worker_busy_handlers", "Handlers of this process running a job now.", l...),
		concurrency:  gauge("bounded_queue_worker_concurrency", "Handlers this process may run at once.", l...),
		workerCounters: []metric{
			counter("bounded_queue_jobs_processed_total", "Jobs whose handler succeeded in this process.", l...),
			counter("bounded_queue_jobs_failed_total", "Failed runs in this process, retried or not.", l...),
			counter("bounded_queue_jobs_retried_total", "Failed jobs scheduled for another run.", l...),
			counter("bounded_queue_jobs_dead_lettered_total", "Jobs sent to the dead letters by this process.", l...),
			counter("bounded_queue_handler_panics_total", "Handler panics.", l...),
			counter("bounded_queue_jobs_recovered_total", "Jobs taken back from dead consumers by this process.", l...),
			counter("bounded_queue_jobs_malformed_total", "Jobs that could not be decoded.", l...),
			counter("bounded_queue_lost_leases_total", "Outcomes that found their job given to another consumer.", l...),
			counter("bounded_queue_fetch_errors_total", "Fetches from Redis that failed.", l...),
			counter("bounded_queue_ack_errors_total", "Acks to Redis that failed.", l...),
			counter("bounded_queue_ignored_timeouts_total", "Handlers that returned over a second after their timeout.", l...),
		},
	}
}

func (c *QueueCollector) metrics() []metric {
	return append([]metric{c.ready, c.delayed, c.inFlight, c.dead, c.consumers, c.refused, c.age,
		c.scrapeErrors, c.oldest, c.busy, c.concurrency, c.startDelay, c.run}, c.workerCounters...)
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prom.Desc) {
	if c.describe(ch) {
		describe(ch, c.metrics()...)
	}
}

// Collect implements prometheus.Collector. It reads Redis for at most the
// configured timeout.
func (c *QueueCollector) Collect(ch chan<- prom.Metric) {
	if !c.collect(ch) {
		return
	}
	if c.refresh.TryLock() {
		c.read()
		c.refresh.Unlock()
	}
	now := time.Now()
	c.mu.Lock()
	last := append([]cached(nil), c.last...)
	errs := append([]uint64(nil), c.errors...)
	c.mu.Unlock()
	for i, q := range c.cfg.Queues {
		n, ns := q.Name(), q.Namespace()
		c.scrapeErrors.emit(ch, float64(errs[i]), n, ns)
		l := last[i]
		if l.at.IsZero() {
			continue
		}
		c.ready.emit(ch, float64(l.s.Ready), n, ns)
		c.delayed.emit(ch, float64(l.s.Delayed), n, ns)
		c.inFlight.emit(ch, float64(l.s.InFlight), n, ns)
		c.dead.emit(ch, float64(l.s.Dead), n, ns)
		c.consumers.emit(ch, float64(l.s.Consumers), n, ns)
		c.refused.emit(ch, float64(l.s.Refused), n, ns)
		c.oldest.emit(ch, l.s.OldestReady.Seconds(), n, ns)
		c.age.emit(ch, max(now.Sub(l.at), 0).Seconds(), n, ns)
	}
	c.collectWorkers(ch)
}

// read refreshes the cache, queue by queue, within one timeout.
func (c *QueueCollector) read() {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	for i, q := range c.cfg.Queues {
		s, err := q.Stats(ctx)
		c.mu.Lock()
		if err != nil {
			c.errors[i]++
		} else {
			s.Local = nil
			c.last[i] = cached{s: s, at: time.Now()}
		}
		c.mu.Unlock()
	}
}

func (c *QueueCollector) collectWorkers(ch chan<- prom.Metric) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ws := c.cfg.Workers
	if c.cfg.LiveWorkers != nil {
		ws = append(append([]*queue.Worker(nil), ws...), c.cfg.LiveWorkers()...)
	}
	var order []queueKey
	sums := map[queueKey]*workerSum{}
	sumOf := func(n queueKey) *workerSum {
		t := sums[n]
		if t == nil {
			t = &workerSum{}
			sums[n] = t
			order = append(order, n)
		}
		return t
	}
	now := make(map[*queue.Worker]workerSnap, len(ws))
	for _, w := range ws {
		if _, dup := now[w]; dup || w == nil {
			continue
		}
		n, s := keyOf(w.Queue()), w.Stats()
		one := workerSum{busy: float64(s.Busy), conc: float64(s.Concurrency), startDelay: s.StartDelay, run: s.Run,
			v: [11]uint64{s.Processed, s.Failed, s.Retried, s.Dead, s.Panics, s.Recovered,
				s.Malformed, s.LostLeases, s.FetchErrors, s.AckErrors, s.IgnoredTimeouts}}
		now[w] = workerSnap{queue: n, sum: one}
		if snap, ok := c.gone[weak.Make(w)]; ok { // back in the list
			c.retired[snap.queue].subCounts(&snap.sum)
			delete(c.gone, weak.Make(w))
		}
		t := sumOf(n)
		t.busy += one.busy
		t.conc += one.conc
		t.addCounts(&one)
	}
	// The workers that left the list since the last scrape: their last
	// counts stay in the sums.
	for w, snap := range c.seen {
		if _, ok := now[w]; ok {
			continue
		}
		if c.retired == nil {
			c.retired = map[queueKey]*workerSum{}
		}
		r := c.retired[snap.queue]
		if r == nil {
			r = &workerSum{}
			c.retired[snap.queue] = r
		}
		r.addCounts(&snap.sum)
		if c.gone == nil {
			c.gone = map[weak.Pointer[queue.Worker]]workerSnap{}
		}
		c.gone[weak.Make(w)] = snap
	}
	for k := range c.gone {
		if k.Value() == nil { // collected: it cannot come back
			delete(c.gone, k)
		}
	}
	c.seen = now
	for n, r := range c.retired {
		sumOf(n).addCounts(r)
	}
	for _, n := range order {
		t := sums[n]
		c.busy.emit(ch, t.busy, n.name, n.ns)
		c.concurrency.emit(ch, t.conc, n.name, n.ns)
		c.startDelay.emitHistogram(ch, t.startDelay, n.name, n.ns)
		c.run.emitHistogram(ch, t.run, n.name, n.ns)
		for i, v := range t.v {
			c.workerCounters[i].emit(ch, float64(v), n.name, n.ns)
		}
	}
}
