package otelcache_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/contrib/otel/otelcache"
	"github.com/bounded-go/bounded/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeCache struct {
	name string
	s    cache.Stats
}

func (f fakeCache) Name() string       { return f.name }
func (f fakeCache) Stats() cache.Stats { return f.s }

// point is one data point: its metric, attributes and value.
type point struct {
	metric string
	attrs  string
	v      int64
}

func collect(t *testing.T, r *sdkmetric.ManualReader) []point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []point
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out = append(out, point{m.Name, p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value})
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out = append(out, point{m.Name, p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value})
				}
			default:
				t.Fatalf("%s: data of type %T", m.Name, m.Data)
			}
		}
	}
	return out
}

func observe(t *testing.T, caches ...otelcache.StatsCache) (*sdkmetric.ManualReader, *otelcache.CacheObserver) {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	o, err := otelcache.ObserveCaches(caches, otelcache.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return r, o
}

// Every number cache.Stats counts is reported: each numeric field is given
// a value of its own and must come out in exactly one data point, with the
// cache's name; a field added to cache.Stats and not here fails.
func TestObserveCachesReportsEveryStatsField(t *testing.T) {
	var s cache.Stats
	v := reflect.ValueOf(&s).Elem()
	want := map[int64]string{}
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		x := int64(1000 + i)
		switch f.Kind() {
		case reflect.Uint64:
			f.SetUint(uint64(x))
		case reflect.Int, reflect.Int64:
			f.SetInt(x)
		case reflect.Bool:
			f.SetBool(true)
			continue
		case reflect.String:
			f.SetString("tracking")
			continue
		default:
			t.Fatalf("cache.Stats.%s is a %s: teach this test and ObserveCaches about it", name, f.Kind())
		}
		want[x] = name
	}
	r, _ := observe(t, fakeCache{"users", s})
	seen := map[int64]int{}
	var subscribed, mode bool
	for _, p := range collect(t, r) {
		if !strings.Contains(p.attrs, "bounded.cache.name=users") {
			t.Errorf("%s %s: no cache name", p.metric, p.attrs)
		}
		seen[p.v]++
		switch p.metric {
		case "bounded.cache.subscribed":
			subscribed = p.v == 1
		case "bounded.cache.invalidation.mode":
			mode = p.v == 1 && strings.Contains(p.attrs, "bounded.cache.invalidation.mode=tracking")
		}
	}
	for x, name := range want {
		if seen[x] != 1 {
			t.Errorf("cache.Stats.%s (%d) is in %d data points, want 1", name, x, seen[x])
		}
	}
	if !subscribed || !mode {
		t.Errorf("subscribed %t, mode %t", subscribed, mode)
	}
}

// A real cache's counters, read at each collection; after Close nothing is
// reported.
func TestObserveCachesReadsAtCollection(t *testing.T) {
	mr := miniredis.RunT(t)
	p, err := pool.New(pool.Config{Addrs: []string{mr.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	k, err := cache.New(p, "users", cache.Config[string]{})
	if err != nil {
		t.Fatal(err)
	}
	r, o := observe(t, k)
	value := func(metric string) (int64, bool) {
		for _, pt := range collect(t, r) {
			if pt.metric == metric {
				return pt.v, true
			}
		}
		return 0, false
	}
	ctx := context.Background()
	if _, err := k.Get(ctx, "nobody"); err == nil {
		t.Fatal("a Get of a missing key succeeded")
	}
	if got, _ := value("bounded.cache.misses"); got != 1 {
		t.Fatalf("misses %d, want 1", got)
	}
	if err := k.Set(ctx, "a", "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx, "nobody"); err == nil {
		t.Fatal("a Get of a missing key succeeded")
	}
	if got, _ := value("bounded.cache.misses"); got != 2 {
		t.Fatalf("misses %d, want 2", got)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if got, ok := value("bounded.cache.misses"); ok {
		t.Fatalf("misses %d reported after Close", got)
	}
}

// Two caches with one name, or a nil one, are refused with an error that
// says which.
func TestObserveCachesRefusesBadLists(t *testing.T) {
	for _, tc := range []struct {
		caches []otelcache.StatsCache
		want   string
	}{
		{[]otelcache.StatsCache{fakeCache{name: "a"}, fakeCache{name: "b"}, fakeCache{name: "a"}}, `caches 0 and 2 are both named "a"`},
		{[]otelcache.StatsCache{fakeCache{name: "a"}, nil}, "cache 1 is nil"},
	} {
		_, err := otelcache.ObserveCaches(tc.caches, otelcache.WithMeterProvider(sdkmetric.NewMeterProvider()))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.caches, err, tc.want)
		}
	}
}

// A cache's counters, read by an OpenTelemetry metric reader.
func ExampleObserveCaches() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{mr.Addr()}})
	defer p.Close()
	users, _ := cache.New(p, "users", cache.Config[string]{})

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	obs, err := otelcache.ObserveCaches([]otelcache.StatsCache{users}, otelcache.WithMeterProvider(mp))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer obs.Close()

	_, _ = users.Get(context.Background(), "nobody")
	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == "bounded.cache.misses" {
			fmt.Println(m.Name, m.Data.(metricdata.Sum[int64]).DataPoints[0].Value)
		}
	}
	// Output: bounded.cache.misses 1
}
