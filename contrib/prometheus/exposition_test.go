package prometheus_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/bounded-go/bounded/cache"
	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/internal/grafanacheck"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
	"github.com/bounded-go/bounded/ratelimit"
)

// fullExposition registers every collector, fed by real components that
// have done some work (jobs run, a cache hit and a load, limiter decisions,
// memwatch samples with a growth slope), and gathers the exposition.
func fullExposition(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	ctx := context.Background()
	q := newQueue(t, p, "mail")
	g := lifecycle.New()
	t.Cleanup(func() { _ = g.Close(context.Background()) })
	w := startWorker(t, g, p, q, func(context.Context, *queue.Job) error { return nil })
	enqueue(t, q, 3)
	tu.Eventually(t, tu.Wait, "three jobs done", func() bool { return w.Stats().Processed == 3 })
	enqueue(t, q, 1, queue.Delay(time.Hour))

	k, err := cache.New(p, "users", cache.Config[string]{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.GetOrLoad(ctx, "a", func(context.Context) (string, error) { return "alice", nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := k.GetOrLoad(ctx, "b", func(context.Context) (string, error) { return "", errors.New("no") }); err == nil {
		t.Fatal("a failing load succeeded")
	}
	l, err := ratelimit.New(p, "login", ratelimit.Config{Rate: 1})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := l.Allow(ctx, "u"); err != nil {
			t.Fatal(err)
		}
	}
	mw, err := memwatch.New(memwatch.Config{History: 8, GrowthWindow: 3})
	if err != nil {
		t.Fatal(err)
	}
	for range 8 {
		runtime.GC() // each sample reads a new GC cycle: the slopes need them
		mw.Tick()
	}
	if _, ok := mw.Trend(); !ok {
		t.Fatal("memwatch has no growth slope after 8 samples")
	}

	reg := prom.NewPedanticRegistry()
	reg.MustRegister(
		bprom.NewPoolCollector(p),
		bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}, Workers: []*queue.Worker{w}}),
		bprom.NewCacheCollector(k),
		bprom.NewLimiterCollector(l),
		bprom.NewMemwatchCollector(mw),
	)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// TestExpositionLints runs promlint over the exposition of every collector
// and wants no problem at all.
func TestExpositionLints(t *testing.T) {
	mfs := fullExposition(t)
	if len(mfs) < 70 {
		t.Fatalf("only %d metric families gathered", len(mfs))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
}

// TestExpositionHasTheIssueList checks the families issue 19 asks for, by
// name and type.
func TestExpositionHasTheIssueList(t *testing.T) {
	types := map[string]dto.MetricType{}
	for _, mf := range fullExposition(t) {
		types[mf.GetName()] = mf.GetType()
	}
	G, C, H := dto.MetricType_GAUGE, dto.MetricType_COUNTER, dto.MetricType_HISTOGRAM
	for name, want := range map[string]dto.MetricType{
		// pool lanes: size, in use, waiting, wait time, rejections, dial errors, health
		"bounded_pool_max_connections": G, "bounded_pool_in_use_connections": G, "bounded_pool_waiting_callers": G,
		"bounded_pool_wait_seconds": H, "bounded_pool_rejections_total": C, "bounded_pool_dial_errors_total": C,
		"bounded_pool_up": G,
		// queues
		"bounded_queue_ready_jobs": G, "bounded_queue_delayed_jobs": G, "bounded_queue_in_flight_jobs": G,
		"bounded_queue_dead_jobs": G, "bounded_queue_consumers": G, "bounded_queue_jobs_processed_total": C,
		"bounded_queue_jobs_failed_total": C, "bounded_queue_jobs_retried_total": C,
		"bounded_queue_jobs_dead_lettered_total": C, "bounded_queue_start_delay_seconds": H,
		"bounded_queue_run_duration_seconds": H, "bounded_queue_oldest_ready_age_seconds": G,
		// caches
		"bounded_cache_hits_total": C, "bounded_cache_misses_total": C, "bounded_cache_loads_total": C,
		"bounded_cache_load_errors_total": C, "bounded_cache_evictions_total": C, "bounded_cache_local_bytes": G,
		// limiters
		"bounded_ratelimit_allowed_total": C, "bounded_ratelimit_denied_total": C, "bounded_ratelimit_redis_errors_total": C,
		// memwatch
		"bounded_memwatch_retained_bytes": G, "bounded_memwatch_heap_live_bytes": G, "bounded_memwatch_goroutines": G,
		"bounded_memwatch_alert_active": G, "bounded_memwatch_heap_growth_bytes_per_second": G,
	} {
		got, ok := types[name]
		if !ok {
			t.Errorf("%s missing", name)
		} else if got != want {
			t.Errorf("%s is a %s, want a %s", name, got, want)
		}
	}
}

// TestGrafanaDashboard parses docs/grafana-dashboard.json and checks that
// every metric its queries and variables name is in the exposition (a
// histogram's _bucket, _sum and _count series included), so a renamed
// metric cannot leave the dashboard silently empty.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	queried, problems := grafanacheck.Dashboard(raw, exportedSeries(fullExposition(t)))
	for _, p := range problems {
		t.Error(p)
	}
	if len(queried) < 40 {
		t.Errorf("the dashboard queries only %d metrics", len(queried))
	}
	t.Logf("%d metrics queried: %s", len(queried), strings.Join(queried, " "))
}

// exportedSeries maps each series name of mfs (a histogram's _bucket, _sum
// and _count) to its label names.
func exportedSeries(mfs []*dto.MetricFamily) grafanacheck.Series {
	series := grafanacheck.Series{}
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		n := mf.GetName()
		series[n] = labels
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			bucket := map[string]bool{"le": true}
			for l := range labels {
				bucket[l] = true
			}
			series[n+"_bucket"], series[n+"_sum"], series[n+"_count"] = bucket, labels, labels
		}
	}
	return series
}

// TestGrafanaDashboardCatchesTypos feeds the check the real dashboard with
// one mistake each: every one would leave a panel silently empty, and
// every one must be reported.
func TestGrafanaDashboardCatchesTypos(t *testing.T) {
	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	series := exportedSeries(fullExposition(t))
	if _, problems := grafanacheck.Dashboard(raw, series); len(problems) != 0 {
		t.Fatalf("the real dashboard has problems: %v", problems)
	}
	for name, mistake := range map[string]struct{ old, new string }{
		"metric name":           {`bounded_queue_ready_jobs{`, `bounded_queue_ready_job{`},
		"prefix":                {`min(bounded_pool_up)`, `min(bouned_pool_up)`},
		"label name":            {`bounded_pool_waiting_callers{lane=~`, `bounded_pool_waiting_callers{lanes=~`},
		"label of another kind": {`bounded_queue_dead_jobs{queue=~`, `bounded_queue_dead_jobs{cache=~`},
		"collapsed row": {`"panels": [`, `"panels": [
    {"type": "row", "id": 9999, "title": "collapsed", "collapsed": true, "panels": [
      {"type": "timeseries", "id": 9998, "title": "hidden", "targets": [{"expr": "bounded_queue_nonsense_total", "refId": "A"}]}]},`},
	} {
		t.Run(name, func(t *testing.T) {
			bad := strings.Replace(string(raw), mistake.old, mistake.new, 1)
			if bad == string(raw) {
				t.Fatalf("%q is not in the dashboard", mistake.old)
			}
			if _, problems := grafanacheck.Dashboard([]byte(bad), series); len(problems) == 0 {
				t.Errorf("a dashboard with %s was accepted", strings.TrimSpace(mistake.new))
			}
		})
	}
}
