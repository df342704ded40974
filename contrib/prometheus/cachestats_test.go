package prometheus_test

import (
	"reflect"
	"testing"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/bounded-go/bounded/cache"
	bprom "github.com/bounded-go/bounded/contrib/prometheus"
)

// fakeCache returns fixed Stats.
type fakeCache struct {
	name string
	s    cache.Stats
}

func (f fakeCache) Name() string       { return f.name }
func (f fakeCache) Stats() cache.Stats { return f.s }

// Every number cache.Stats counts is exported: each numeric field is given
// a value of its own and must come out in exactly one sample; the mode
// comes out as an info metric. A field added to cache.Stats and not to the
// collector fails here.
func TestCacheCollectorExportsEveryStatsField(t *testing.T) {
	var s cache.Stats
	v := reflect.ValueOf(&s).Elem()
	want := map[float64]string{} // value -> field
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		x := float64(1000 + i)
		switch f.Kind() {
		case reflect.Uint64:
			f.SetUint(uint64(x))
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(x))
		case reflect.Bool:
			f.SetBool(true)
			continue // 1, checked below
		case reflect.String:
			f.SetString("tracking")
			continue // a label, checked below
		default:
			t.Fatalf("cache.Stats.%s is a %s: teach this test and the collector about it", name, f.Kind())
		}
		want[x] = name
	}
	reg := prom.NewPedanticRegistry()
	reg.MustRegister(bprom.NewCacheCollector(fakeCache{"users", s}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[float64]int{}
	var subscribed, mode bool
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			x := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			seen[x]++
			switch mf.GetName() {
			case "bounded_cache_subscribed":
				subscribed = x == 1
			case "bounded_cache_invalidation_info":
				for _, l := range m.GetLabel() {
					if l.GetName() == "mode" {
						mode = l.GetValue() == "tracking" && x == 1
					}
				}
			}
		}
	}
	for x, name := range want {
		if seen[x] != 1 {
			t.Errorf("cache.Stats.%s (%v) is in %d samples, want 1", name, x, seen[x])
		}
	}
	if !subscribed {
		t.Error("bounded_cache_subscribed is not 1 with Subscribed true")
	}
	if !mode {
		t.Error(`no bounded_cache_invalidation_info{mode="tracking"} 1`)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}

	// Before the subscriber first connects the mode is "": no info sample.
	s.InvalidationMode = ""
	reg = prom.NewPedanticRegistry()
	reg.MustRegister(bprom.NewCacheCollector(fakeCache{"users", s}))
	mfs, err = reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "bounded_cache_invalidation_info" {
			t.Fatalf("an invalidation mode before any: %v", mf)
		}
	}
}
