package otelcache_test

import (
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/contrib/otel/otelcache"
)

// A nil *cache.Cache (a cache whose New failed, left in the list) is the
// nil cache ObserveCaches refuses: the check saw only a nil interface, and
// the typed nil panicked on its Name.
func TestObserveCachesRefusesATypedNilCache(t *testing.T) {
	var k *cache.Cache[string]
	var err error
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("ObserveCaches panicked on a nil *cache.Cache: %v", v)
			}
		}()
		_, err = otelcache.ObserveCaches([]otelcache.StatsCache{fakeCache{name: "a"}, k},
			otelcache.WithMeterProvider(sdkmetric.NewMeterProvider()))
	}()
	if err == nil || !strings.Contains(err.Error(), "cache 1 is nil") {
		t.Fatalf("error %v, want one saying cache 1 is nil", err)
	}
}
