package prometheus_test

import (
	"strings"
	"testing"

	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/bounded-go/bounded/cache"
	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/queue"
)

// A nil component (a cache, limiter or queue whose New failed, left in the
// list) is refused by Register with an error that names it, as a duplicate
// name is: the constructors read every component's Name, and panicked on a
// nil one before anything could report it.
func TestCollectorsRefuseNilComponents(t *testing.T) {
	for name, tc := range map[string]struct {
		build func() prom.Collector
		want  string
	}{
		"nil cache interface": {func() prom.Collector { return bprom.NewCacheCollector(fakeCache{name: "a"}, nil) }, "NewCacheCollector: cache 1 is nil"},
		"nil *cache.Cache": {func() prom.Collector {
			return bprom.NewCacheCollector((*cache.Cache[string])(nil), fakeCache{name: "a"})
		}, "NewCacheCollector: cache 0 is nil"},
		"nil limiter": {func() prom.Collector { return bprom.NewLimiterCollector(nil) }, "NewLimiterCollector: limiter 0 is nil"},
		"nil queue": {func() prom.Collector {
			return bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{nil}})
		}, "NewQueueCollector: queue 0 is nil"},
	} {
		t.Run(name, func(t *testing.T) {
			var c prom.Collector
			func() {
				defer func() {
					if v := recover(); v != nil {
						t.Fatalf("the constructor panicked: %v", v)
					}
				}()
				c = tc.build()
			}()
			err := prom.NewPedanticRegistry().Register(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Register: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
