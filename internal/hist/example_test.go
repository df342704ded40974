package hist_test

import (
	"fmt"
	"time"

	"github.com/bounded-go/bounded/internal/hist"
)

// Quantiles come back as upper bounds within 1/8 of the true value, whatever
// the number of values observed: the histogram has a fixed size.
func Example() {
	var h hist.Histogram
	for i := 1; i <= 100; i++ {
		h.Observe(time.Duration(i) * time.Millisecond)
	}
	p50, p99 := h.Quantile(0.5), h.Quantile(0.99)
	fmt.Println(h.Count(), p50 >= 50*time.Millisecond && p50 <= 57*time.Millisecond, p99 >= 99*time.Millisecond && p99 <= 112*time.Millisecond)
	// Output:
	// 100 true true
}
