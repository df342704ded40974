package prometheus_test

import (
	"strings"
	"testing"

	prom "github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
)

// A name that is not valid UTF-8 (check.Name lets one through: it looks
// for spaces and control characters) cannot be a label value: the scrape
// reports an error naming it, and the process goes on. MustNewConstMetric
// panicked, in the registry's collecting goroutine, which ends the
// process.
func TestInvalidUTF8NameFailsTheScrapeNotTheProcess(t *testing.T) {
	c := bprom.NewCacheCollector(fakeCache{name: "bad\xffname"}, fakeCache{name: "good"})
	ch := make(chan prom.Metric, 256)
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("Collect panicked: %v", v)
			}
		}()
		c.Collect(ch)
	}()
	close(ch)
	bad, good := 0, 0
	for m := range ch {
		if err := m.Write(&dto.Metric{}); err != nil {
			bad++
			continue
		}
		good++
	}
	if bad == 0 || good == 0 {
		t.Fatalf("%d samples failed and %d were written: want the bad cache's to fail and the good one's written", bad, good)
	}
	r := prom.NewPedanticRegistry()
	r.MustRegister(c)
	if _, err := r.Gather(); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("Gather: %v, want an error about the label's UTF-8", err)
	}
}
