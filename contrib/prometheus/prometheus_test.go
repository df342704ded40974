package prometheus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/cache"
	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
	"github.com/bounded-go/bounded/ratelimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPool(t testing.TB, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newQueue(t testing.TB, p *pool.Pool, name string) *queue.Queue {
	t.Helper()
	q, err := queue.New(p, name, queue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func enqueue(t testing.TB, q *queue.Queue, n int, opts ...queue.EnqueueOption) {
	t.Helper()
	for range n {
		if _, err := q.Enqueue(context.Background(), []byte("x"), opts...); err != nil {
			t.Fatal(err)
		}
	}
}

// scrape gathers c once through a pedantic registry (which checks Collect
// against Describe) and returns a lookup of its samples.
func scrape(t *testing.T, c prom.Collector) lookup {
	t.Helper()
	reg := prom.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return lookup{t: t, mfs: mfs}
}

type lookup struct {
	t   *testing.T
	mfs []*dto.MetricFamily
}

// get returns the sample of name with labels, given as name=value pairs
// (a histogram's sample count); ok is false when there is none.
func (l lookup) get(name string, labels ...string) (v float64, ok bool) {
	for _, mf := range l.mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func (l lookup) must(name string, labels ...string) float64 {
	l.t.Helper()
	v, ok := l.get(name, labels...)
	if !ok {
		l.t.Fatalf("no sample %s%v", name, labels)
	}
	return v
}

// value scrapes c once and returns one sample.
func value(t *testing.T, c prom.Collector, name string, labels ...string) (float64, bool) {
	t.Helper()
	return scrape(t, c).get(name, labels...)
}

// mustValue scrapes c once and returns one sample, which must exist.
func mustValue(t *testing.T, c prom.Collector, name string, labels ...string) float64 {
	t.Helper()
	return scrape(t, c).must(name, labels...)
}

func TestQueueCollectorReadsRedisOnlyWhenScraped(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	enqueue(t, q, 3)
	enqueue(t, q, 1, queue.Delay(time.Hour))

	before := m.CommandCount()
	c := bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}})
	prom.NewPedanticRegistry().MustRegister(c)
	if got := m.CommandCount(); got != before {
		t.Fatalf("building and registering the collector read Redis: %d commands", got-before)
	}

	want := `
# HELP bounded_queue_ready_jobs Jobs ready to run.
# TYPE bounded_queue_ready_jobs gauge
bounded_queue_ready_jobs{queue="mail",queue_namespace="bq"} 3
# HELP bounded_queue_delayed_jobs Jobs delayed or waiting to retry.
# TYPE bounded_queue_delayed_jobs gauge
bounded_queue_delayed_jobs{queue="mail",queue_namespace="bq"} 1
# HELP bounded_queue_dead_jobs Jobs in the dead letters.
# TYPE bounded_queue_dead_jobs gauge
bounded_queue_dead_jobs{queue="mail",queue_namespace="bq"} 0
# HELP bounded_queue_stats_age_seconds Age of the counts exported: 0 when read by this scrape.
# TYPE bounded_queue_stats_age_seconds gauge
bounded_queue_stats_age_seconds{queue="mail",queue_namespace="bq"} 0
# HELP bounded_queue_scrape_errors_total Scrapes whose Redis read of the queue failed or timed out.
# TYPE bounded_queue_scrape_errors_total counter
bounded_queue_scrape_errors_total{queue="mail",queue_namespace="bq"} 0
`
	// The age is measured after the read, so it is a few microseconds, not 0:
	// compare everything else, and the age separately.
	names := []string{"bounded_queue_ready_jobs", "bounded_queue_delayed_jobs", "bounded_queue_dead_jobs", "bounded_queue_scrape_errors_total"}
	want = strings.Replace(want, "# HELP bounded_queue_stats_age_seconds Age of the counts exported: 0 when read by this scrape.\n# TYPE bounded_queue_stats_age_seconds gauge\nbounded_queue_stats_age_seconds{queue=\"mail\"} 0\n", "", 1)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if age := mustValue(t, c, "bounded_queue_stats_age_seconds", "queue", "mail"); age > 1 {
		t.Fatalf("age of a fresh read: %vs", age)
	}

	enqueue(t, q, 1)
	if got := mustValue(t, c, "bounded_queue_ready_jobs", "queue", "mail"); got != 4 {
		t.Fatalf("ready after one more enqueue: %v, want 4 (read at scrape time)", got)
	}
}

func TestQueueCollectorRedisDownKeepsLastValue(t *testing.T) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	enqueue(t, q, 2)
	c := bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}, Timeout: 200 * time.Millisecond})
	if got := mustValue(t, c, "bounded_queue_ready_jobs", "queue", "mail"); got != 2 {
		t.Fatalf("ready: %v, want 2", got)
	}
	m.Close()

	down := scrape(t, c)
	if got := down.must("bounded_queue_ready_jobs", "queue", "mail"); got != 2 {
		t.Fatalf("ready with Redis down: %v, want the cached 2", got)
	}
	if got := down.must("bounded_queue_scrape_errors_total", "queue", "mail"); got != 1 {
		t.Fatalf("scrape errors: %v, want 1", got)
	}
	if got := down.must("bounded_queue_stats_age_seconds", "queue", "mail"); got <= 0 {
		t.Fatalf("age of a cached value: %v, want > 0", got)
	}
}

func TestQueueCollectorNeverReadExportsOnlyErrors(t *testing.T) {
	p := newPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	q := newQueue(t, p, "mail")
	c := bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}, Timeout: 200 * time.Millisecond})
	s := scrape(t, c)
	if _, ok := s.get("bounded_queue_ready_jobs", "queue", "mail"); ok {
		t.Fatal("a queue never read exports a ready count")
	}
	if got := s.must("bounded_queue_scrape_errors_total", "queue", "mail"); got != 1 {
		t.Fatalf("scrape errors: %v, want 1", got)
	}
}

func TestQueueCollectorScrapeTimeout(t *testing.T) {
	// The pool would wait a minute for an answer; the scrape's timeout
	// (50ms, all queues together) must end it long before.
	p := newPool(t, pool.Config{Addrs: []string{redistest.BlackHole(t)}, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
		Request: pool.LaneConfig{MaxWait: time.Minute}})
	qs := []*queue.Queue{newQueue(t, p, "a"), newQueue(t, p, "b")}
	c := bprom.NewQueueCollector(bprom.QueueConfig{Queues: qs, Timeout: 50 * time.Millisecond})
	done := make(chan int, 1)
	go func() { done <- testutil.CollectAndCount(c) }()
	if n := tu.Recv(t, done, "a scrape against a Redis that never answers"); n != 2 {
		t.Fatalf("scrape returned %d samples, want the 2 error counters", n)
	}
	s := scrape(t, c)
	for _, q := range []string{"a", "b"} {
		if got := s.must("bounded_queue_scrape_errors_total", "queue", q); got != 2 {
			t.Fatalf("scrape errors of %s after two scrapes: %v, want 2", q, got)
		}
	}
}

func TestQueueCollectorWorkerCounters(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	cons, err := queue.NewConsumer(p, queue.ConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := queue.NewWorker(cons, q, func(ctx context.Context, j *queue.Job) error {
		if string(j.Payload) == "bad" {
			return queue.Permanent(errors.New("bad"))
		}
		return nil
	}, queue.WorkerConfig{Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	g := lifecycle.New()
	t.Cleanup(func() { _ = g.Close(context.Background()) })
	if err := w.Start(g); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, s := range []string{"ok", "ok", "bad"} {
		if _, err := q.Enqueue(ctx, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	tu.Eventually(t, tu.Wait, "three jobs done", func() bool {
		s := w.Stats()
		return s.Processed == 2 && s.Dead == 1
	})
	c := bprom.NewQueueCollector(bprom.QueueConfig{Workers: []*queue.Worker{w}})
	want := `
# HELP bounded_queue_jobs_processed_total Jobs whose handler succeeded in this process.
# TYPE bounded_queue_jobs_processed_total counter
bounded_queue_jobs_processed_total{queue="mail",queue_namespace="bq"} 2
# HELP bounded_queue_jobs_failed_total Failed runs in this process, retried or not.
# TYPE bounded_queue_jobs_failed_total counter
bounded_queue_jobs_failed_total{queue="mail",queue_namespace="bq"} 1
# HELP bounded_queue_jobs_dead_lettered_total Jobs sent to the dead letters by this process.
# TYPE bounded_queue_jobs_dead_lettered_total counter
bounded_queue_jobs_dead_lettered_total{queue="mail",queue_namespace="bq"} 1
# HELP bounded_queue_worker_concurrency Handlers this process may run at once.
# TYPE bounded_queue_worker_concurrency gauge
bounded_queue_worker_concurrency{queue="mail",queue_namespace="bq"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "bounded_queue_jobs_processed_total",
		"bounded_queue_jobs_failed_total", "bounded_queue_jobs_dead_lettered_total", "bounded_queue_worker_concurrency"); err != nil {
		t.Fatal(err)
	}
	if n := m.CommandCount(); n == 0 {
		t.Fatal("miniredis saw no command")
	}
}

func TestPoolCollector(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, Request: pool.LaneConfig{Size: 7}})
	if err := p.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := bprom.NewPoolCollector(p)
	if got := mustValue(t, c, "bounded_pool_max_connections", "lane", pool.LaneRequest); got != 7 {
		t.Fatalf("request lane size: %v, want 7", got)
	}
	if got := mustValue(t, c, "bounded_pool_up"); got != 1 {
		t.Fatalf("up: %v, want 1", got)
	}
	if got := mustValue(t, c, "bounded_pool_dials_total", "lane", pool.LaneRequest); got < 1 {
		t.Fatalf("request dials: %v, want at least 1", got)
	}
	for _, l := range []string{pool.LaneRequest, pool.LaneBackground, pool.LaneBlocking} {
		if _, ok := value(t, c, "bounded_pool_rejections_total", "lane", l); !ok {
			t.Fatalf("no rejections counter for lane %s", l)
		}
	}
}

func TestCacheCollector(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	k, err := cache.New(p, "users", cache.Config[string]{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := k.Set(ctx, "a", "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx, "nobody"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	c := bprom.NewCacheCollector(k)
	s := k.Stats()
	for name, want := range map[string]float64{
		"bounded_cache_misses_total": float64(s.Misses),
		"bounded_cache_local_bytes":  float64(s.LocalBytes),
	} {
		if got := mustValue(t, c, name, "cache", "users"); got != want {
			t.Fatalf("%s: %v, want %v", name, got, want)
		}
	}
	if s.Misses != 1 {
		t.Fatalf("misses: %d, want 1", s.Misses)
	}
	local := mustValue(t, c, "bounded_cache_hits_total", "cache", "users", "tier", "local")
	redis := mustValue(t, c, "bounded_cache_hits_total", "cache", "users", "tier", "redis")
	if local+redis != 1 {
		t.Fatalf("hits: local %v + redis %v, want 1", local, redis)
	}
}

func TestLimiterCollector(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	l, err := ratelimit.New(p, "login", ratelimit.Config{Rate: 1, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := l.Allow(context.Background(), "u1"); err != nil {
			t.Fatal(err)
		}
	}
	c := bprom.NewLimiterCollector(l)
	want := `
# HELP bounded_ratelimit_allowed_total Decisions that allowed the request, by the source that decided: redis, denied-cache (never allows) or fallback (Config.OnRedisError).
# TYPE bounded_ratelimit_allowed_total counter
bounded_ratelimit_allowed_total{limiter="login",source="denied-cache"} 0
bounded_ratelimit_allowed_total{limiter="login",source="fallback"} 0
bounded_ratelimit_allowed_total{limiter="login",source="redis"} 1
# HELP bounded_ratelimit_denied_total Decisions that denied the request, by the source that decided: redis, denied-cache or fallback (Config.OnRedisError).
# TYPE bounded_ratelimit_denied_total counter
bounded_ratelimit_denied_total{limiter="login",source="denied-cache"} 0
bounded_ratelimit_denied_total{limiter="login",source="fallback"} 0
bounded_ratelimit_denied_total{limiter="login",source="redis"} 1
# HELP bounded_ratelimit_redis_errors_total Scripts that failed.
# TYPE bounded_ratelimit_redis_errors_total counter
bounded_ratelimit_redis_errors_total{limiter="login"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "bounded_ratelimit_allowed_total",
		"bounded_ratelimit_denied_total", "bounded_ratelimit_redis_errors_total"); err != nil {
		t.Fatal(err)
	}
}

func TestMemwatchCollector(t *testing.T) {
	w, err := memwatch.New(memwatch.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := bprom.NewMemwatchCollector(w)
	if _, ok := value(t, c, "bounded_memwatch_goroutines"); ok {
		t.Fatal("a sample exported before the first one was taken")
	}
	w.Tick()
	if got := mustValue(t, c, "bounded_memwatch_goroutines"); got < 1 {
		t.Fatalf("goroutines: %v", got)
	}
	if got := mustValue(t, c, "bounded_memwatch_retained_bytes"); got <= 0 {
		t.Fatalf("retained: %v", got)
	}
	if got := mustValue(t, c, "bounded_memwatch_samples_total"); got != 1 {
		t.Fatalf("samples: %v, want 1", got)
	}
	if got := mustValue(t, c, "bounded_memwatch_alert_active", "kind", string(memwatch.AlertGoroutines)); got != 0 {
		t.Fatalf("goroutines alert: %v, want 0", got)
	}
}
