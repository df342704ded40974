package grafanacheck

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// series is a small exposition: a gauge with label lane, a counter with
// label queue, a histogram with label queue.
var series = Series{
	"app_pool_size":                {"lane": true},
	"app_jobs_total":               {"queue": true},
	"app_wait_seconds_bucket":      {"queue": true, "le": true},
	"app_wait_seconds_sum":         {"queue": true},
	"app_wait_seconds_count":       {"queue": true},
	"app_up":                       {},
	"app_memory_limit_bytes_total": {},
}

const dashboard = `{
  "title": "t", "uid": "u",
  "templating": {"list": [{"name": "queue", "definition": "label_values(app_jobs_total, queue)"}]},
  "panels": [
    {"type": "row", "id": 1, "title": "row"},
    {"type": "timeseries", "id": 2, "title": "jobs", "targets": [
      {"expr": "sum by (queue) (rate(app_jobs_total{queue=~\"$queue\"}[5m]))", "refId": "A"}]},
    {"type": "timeseries", "id": 3, "title": "p99", "targets": [
      {"expr": "histogram_quantile(0.99, sum by (le) (rate(app_wait_seconds_bucket{queue=\"a_b\"}[5m])))", "refId": "A"},
      {"expr": "min(app_up) + max(app_pool_size{lane!=\"x\"}) / 1e3", "refId": "B"}]},
    {"type": "row", "id": 4, "title": "collapsed", "collapsed": true, "panels": [
      {"type": "stat", "id": 5, "title": "sum", "targets": [{"expr": "app_wait_seconds_sum / app_wait_seconds_count", "refId": "A"}]}]}
  ]
}`

func TestDashboard(t *testing.T) {
	queried, problems := Dashboard([]byte(dashboard), series)
	if len(problems) != 0 {
		t.Fatalf("problems in a good dashboard: %q", problems)
	}
	want := "app_jobs_total app_pool_size app_up app_wait_seconds_bucket app_wait_seconds_count app_wait_seconds_sum"
	if got := strings.Join(queried, " "); got != want {
		t.Errorf("queried %s, want %s", got, want)
	}
}

// Each mistake would leave a panel empty or the dashboard broken, and must
// be reported, with what names it.
func TestDashboardMistakes(t *testing.T) {
	for name, m := range map[string]struct{ old, new, says string }{
		"metric name":           {`rate(app_jobs_total{`, `rate(app_job_total{`, "app_job_total"},
		"prefix":                {`min(app_up)`, `min(ap_up)`, "ap_up"},
		"label name":            {`app_pool_size{lane!=`, `app_pool_size{lanes!=`, "app_pool_size has no label lanes"},
		"label of another kind": {`app_jobs_total{queue=~`, `app_jobs_total{lane=~`, "app_jobs_total has no label lane"},
		"variable's label":      {`label_values(app_jobs_total, queue)`, `label_values(app_jobs_total, cache)`, "app_jobs_total has no label cache"},
		"variable's metric":     {`label_values(app_jobs_total, queue)`, `label_values(app_jobs, queue)`, "app_jobs,"},
		"in a collapsed row":    {`app_wait_seconds_sum /`, `app_wait_second_sum /`, "app_wait_second_sum"},
		"empty query":           {`"expr": "min(app_up) + max(app_pool_size{lane!=\"x\"}) / 1e3"`, `"expr": " "`, `empty query B`},
		"no query":              {`"targets": [{"expr": "app_wait_seconds_sum / app_wait_seconds_count", "refId": "A"}]`, `"targets": []`, `"sum" queries nothing`},
		"id twice":              {`"id": 5`, `"id": 2`, "panel id 2 used twice"},
		"no uid":                {`"uid": "u"`, `"uid": ""`, "no title, uid or panels"},
		"not JSON":              {`"title": "t",`, `"title": "t"`, "not valid JSON"},
	} {
		t.Run(name, func(t *testing.T) {
			bad := strings.Replace(dashboard, m.old, m.new, 1)
			if bad == dashboard {
				t.Fatalf("%q is not in the dashboard", m.old)
			}
			_, problems := Dashboard([]byte(bad), series)
			if !strings.Contains(strings.Join(problems, "\n"), m.says) {
				t.Errorf("problems %q do not say %q", problems, m.says)
			}
		})
	}
}

// A quoted label value with an underscore, a function, a keyword and a
// dashboard variable are not metric names.
func TestQueryIgnoresWhatIsNotAMetric(t *testing.T) {
	names, problems := Query(`sum without (instance) (increase(app_jobs_total{queue="not_a_metric"}[$__rate_interval])) > bool 0`, series)
	if len(problems) != 0 || strings.Join(names, " ") != "app_jobs_total" {
		t.Errorf("names %q, problems %q", names, problems)
	}
}
