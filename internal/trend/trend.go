// Package trend fits robust slopes to time series. memwatch's heap-growth
// alert and examples/loadtest's soak verdict share it.
package trend

import "slices"

// TheilSen returns the Theil-Sen slope of ys over xs (the median of the
// slopes of all pairs with distinct x) and the share of pairs with different
// y in which the later y is higher: about 0.5 for noise around a flat line,
// near 1 for steady growth. One outlier or one step moves the slope little,
// where least squares would be thrown. ok is false when no pair has distinct
// x.
//
// scratch is space for the n(n-1)/2 pairwise slopes; with that capacity
// TheilSen allocates nothing (memwatch calls it on every sample), and with
// less it grows it.
//
// Sorting the pairwise slopes (pdqsort, in place) costs O(n² log n); a
// selection algorithm would save the log factor, but for the few hundred
// points its callers fit it is not worth the code.
func TheilSen(xs, ys, scratch []float64) (slope, agreement float64, ok bool) {
	slopes := scratch[:0]
	up, down := 0, 0
	for i := range xs {
		for j := i + 1; j < len(xs); j++ {
			dx, dy := xs[j]-xs[i], ys[j]-ys[i]
			switch {
			case dy > 0:
				up++
			case dy < 0:
				down++
			}
			if dx > 0 {
				slopes = append(slopes, dy/dx)
			}
		}
	}
	if len(slopes) == 0 {
		return 0, 0, false
	}
	slices.Sort(slopes)
	m := len(slopes) / 2
	slope = slopes[m]
	if len(slopes)%2 == 0 {
		slope = (slopes[m-1] + slopes[m]) / 2
	}
	if up+down > 0 {
		agreement = float64(up) / float64(up+down)
	}
	return slope, agreement, true
}
