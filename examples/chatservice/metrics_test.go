package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/grafanacheck"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/memwatch"
)

// exposition is one scrape of GET /metrics: the body and its families.
type exposition struct {
	body []byte
	mfs  map[string]*dto.MetricFamily
}

// scrape reads /metrics and parses it. It calls no require: Eventually's
// conditions use it.
func (h *harness) scrape() (exposition, error) {
	code, hdr, body, err := h.try(http.MethodGet, chatapi.PathMetrics, "")
	if err != nil {
		return exposition{}, err
	}
	if code != http.StatusOK {
		return exposition{}, fmt.Errorf("GET %s: %d %s", chatapi.PathMetrics, code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return exposition{}, fmt.Errorf("GET %s: Content-Type %q, want the text format", chatapi.PathMetrics, ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	return exposition{body: body, mfs: mfs}, err
}

// value returns the value of the series of family name whose labels
// include labels (name=value pairs), and whether there is one.
func (e exposition) value(name string, labels ...string) (float64, bool) {
	mf := e.mfs[name]
	if mf == nil {
		return 0, false
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
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// series maps each series name (a histogram's _bucket, _sum and _count) to
// its label names, for grafanacheck.
func (e exposition) series() grafanacheck.Series {
	series := grafanacheck.Series{}
	for n, mf := range e.mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
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

// until calls cond every 10ms, on the test goroutine, until it returns
// nil, and fails the test with cond's last error if that takes longer than
// wait.
func until(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %v", wait, what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMetrics_Mini(t *testing.T) {
	testMetrics(t, func(t *testing.T) string { return "redis://" + redistest.Mini(t).Addr() })
}

func TestMetrics_Server(t *testing.T) {
	testMetrics(t, func(t *testing.T) string { return redistest.Server(t).URL() })
}

// testMetrics runs the service, makes every component work (chats through
// the three queues, an agent load and local hits, replies read from Redis,
// a rate-limited user, memwatch samples with growth slopes), scrapes
// /metrics as Prometheus would, and checks: promlint finds nothing, the
// counts are the work done, and every metric docs/grafana-dashboard.json
// queries is served with the labels it filters on.
func testMetrics(t *testing.T, newRedis func(t *testing.T) string) {
	const chats = 5
	h := startService(t, newRedis(t), func(c *Config) {
		c.FailRate = 0
		c.WaitTarget = -1 // chats queue behind each other here: no shedding
		c.Rate, c.Burst, c.RatePeriod = 1, chats, time.Hour
		// A growth window of 3 samples: the slopes exist after a few
		// GC cycles, which the test runs itself.
		c.Memwatch = memwatch.Config{History: 16, GrowthWindow: 3}
	})
	for i := range chats {
		h.reply(h.post("ada", "coder", fmt.Sprint("hello ", i)))
	}
	code, _, body := h.do(http.MethodPost, chatapi.PathChat, `{"user":"ada","agent":"coder","message":"one too many"}`)
	require.Equal(t, http.StatusTooManyRequests, code, "%s", body)
	for range 3 {
		var a chatapi.Agents
		h.getJSON(chatapi.PathAgents, http.StatusOK, &a)
	}
	for range 8 {
		runtime.GC() // the live heap changes only at a GC: each sample a point
		h.s.mem.Tick()
	}
	_, ok := h.s.mem.Trend()
	require.True(t, ok, "memwatch has no growth slope after 8 samples")

	// The follow-ups (embeddings, webhooks) run after the reply is written:
	// wait until the workers have counted them all.
	var e exposition
	until(t, "every job processed", func() (err error) {
		if e, err = h.scrape(); err != nil {
			return err
		}
		for _, q := range chatapi.Queues() {
			if n, _ := e.value("bounded_queue_jobs_processed_total", "queue", q); n != chats {
				return fmt.Errorf("queue %s: %g of %d jobs processed", q, n, chats)
			}
		}
		return nil
	})

	problems, err := promlint.New(bytes.NewReader(e.body)).Lint()
	require.NoError(t, err)
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"bounded_queue_jobs_failed_total", []string{"queue", chatapi.QueueChat}, 0},
		{"bounded_queue_start_delay_seconds", []string{"queue", chatapi.QueueChat}, chats}, // a histogram: its count
		{"bounded_queue_run_duration_seconds", []string{"queue", chatapi.QueueWebhooks}, chats},
		{"bounded_queue_ready_jobs", []string{"queue", chatapi.QueueEmbeddings}, 0},
		{"bounded_queue_worker_concurrency", []string{"queue", chatapi.QueueChat}, 5},
		{"bounded_queue_consumers", []string{"queue", chatapi.QueueChat}, 1},
		{"bounded_ratelimit_allowed_total", []string{"limiter", "chat", "source", "redis"}, chats},
		{"bounded_ratelimit_denied_total", []string{"limiter", "chat", "source", "redis"}, 1},
		{"bounded_cache_loads_total", []string{"cache", "agents"}, 1},
		{"bounded_cache_local_entries", []string{"cache", "replies"}, 0}, // replies live in Redis only
		{"bounded_pool_max_connections", []string{"lane", "blocking"}, blockingConns},
		{"bounded_pool_reserved_connections", nil, blockingConns}, // the consumer's hub and the agents' subscriber
		{"bounded_pool_up", nil, 1},
	} {
		got, ok := e.value(c.name, c.labels...)
		if assert.True(t, ok, "%s%v not served", c.name, c.labels) {
			assert.Equal(t, c.want, got, "%s%v", c.name, c.labels)
		}
	}
	// Every chat reads the agents (the POST checks the agent, the handler
	// reads its config) and so do the three GETs: one load, hits after it.
	hits, _ := e.value("bounded_cache_hits_total", "cache", "agents", "tier", "local")
	assert.GreaterOrEqual(t, hits, float64(3), "agents read from the local tier")
	hits, _ = e.value("bounded_cache_hits_total", "cache", "replies", "tier", "redis")
	assert.GreaterOrEqual(t, hits, float64(chats), "each reply was read from Redis")
	for _, name := range []string{"bounded_memwatch_heap_live_bytes", "bounded_memwatch_goroutines",
		"bounded_memwatch_heap_growth_bytes_per_second", "go_goroutines", "process_resident_memory_bytes"} {
		v, ok := e.value(name)
		assert.True(t, ok, "%s not served", name)
		if name != "bounded_memwatch_heap_growth_bytes_per_second" {
			assert.Positive(t, v, name)
		}
	}

	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	require.NoError(t, err)
	queried, problems2 := grafanacheck.Dashboard(raw, e.series())
	for _, p := range problems2 {
		t.Errorf("docs/grafana-dashboard.json: %s", p)
	}
	assert.GreaterOrEqual(t, len(queried), 40, "metrics the dashboard queries")
}

// With Redis gone, /metrics still answers at once: the queue counts are
// the last ones read, bounded_queue_stats_age_seconds says how old,
// bounded_queue_scrape_errors_total counts the failed reads, and the pool
// says Redis is down.
func TestMetrics_RedisDown(t *testing.T) {
	m := redistest.Mini(t)
	waitDialProbers(t)
	h := startService(t, "redis://"+m.Addr(), nil)
	e, err := h.scrape()
	require.NoError(t, err)
	for _, q := range chatapi.Queues() {
		errs, ok := e.value("bounded_queue_scrape_errors_total", "queue", q)
		require.True(t, ok, q)
		require.Zero(t, errs, q)
		_, ok = e.value("bounded_queue_ready_jobs", "queue", q)
		require.True(t, ok, "%s: counts read from Redis", q)
	}

	m.Close()
	// The pool learns that Redis is gone from a failed command: the scrape's
	// own reads are such commands.
	until(t, "the pool marked down", func() (err error) {
		if e, err = h.scrape(); err != nil {
			return err
		}
		if up, ok := e.value("bounded_pool_up"); !ok || up != 0 {
			return fmt.Errorf("bounded_pool_up %g (served: %v)", up, ok)
		}
		return nil
	})
	for _, q := range chatapi.Queues() {
		errs, _ := e.value("bounded_queue_scrape_errors_total", "queue", q)
		assert.Positive(t, errs, q)
		_, ok := e.value("bounded_queue_ready_jobs", "queue", q)
		assert.True(t, ok, "%s: the last counts read are still served", q)
		age, _ := e.value("bounded_queue_stats_age_seconds", "queue", q)
		assert.Positive(t, age, q)
	}
	problems, err := promlint.New(bytes.NewReader(e.body)).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems)

	// Closing while Redis is away: as in TestHealth_RedisDown_Mini, the
	// workers cannot put their processing lists back, and say so.
	h.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = h.g.Close(ctx)
	require.Error(t, err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "every task returned by the deadline")
	assert.Empty(t, h.g.Tasks(), "tasks left after Close")
	h.client.Transport.(*http.Transport).CloseIdleConnections()
}
