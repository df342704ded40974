package trend_test

import (
	"fmt"

	"github.com/bounded-go/bounded/internal/trend"
)

// One spike does not move the Theil-Sen slope of a steady series: 24 of its
// 28 pairs rise (the 4 that fall all start at the spike).
func ExampleTheilSen() {
	xs := []float64{0, 1, 2, 3, 4, 5, 6, 7}
	ys := []float64{10, 12, 14, 100, 18, 20, 22, 24} // +2 per step, one spike
	slope, agreement, ok := trend.TheilSen(xs, ys, nil)
	fmt.Printf("slope %.1f, %.0f%% of pairs rising, ok %v\n", slope, 100*agreement, ok)
	// Output:
	// slope 2.0, 86% of pairs rising, ok true
}
