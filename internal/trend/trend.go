// Package trend fits robust slopes to time series. memwatch's heap-growth
// alert and examples/loadtest's soak verdict share it.
package trend

import (
	"math"
	"slices"
)

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
// The median is found by selection (quickselect, in place), in O(n²) for the
// n(n-1)/2 slopes rather than the O(n² log n) of sorting them: memwatch
// fits two spans on every sample, and its tests fit tens of thousands.
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
	m := len(slopes) / 2
	slope = selectKth(slopes, m)
	if len(slopes)%2 == 0 {
		// After selection every element before m is at most slopes[m].
		slope = (slices.Max(slopes[:m]) + slope) / 2
	}
	if up+down > 0 {
		agreement = float64(up) / float64(up+down)
	}
	return slope, agreement, true
}

// MannKendall returns the Mann-Kendall trend statistic of ys, taken in
// order: S, the number of pairs (i < j) with ys[j] > ys[i] minus those with
// ys[j] < ys[i], and its normal score z = S / sqrt(n(n-1)(2n+5)/18), the
// number of standard deviations S lies from 0 if the values were in random
// order (with no ties; ties lower the true variance, so z is then a little
// conservative). It says how much a share of rising pairs means: with 5
// points even a perfect rise is z = 2.4, with 60 points a share of 0.65 is
// z = 3.4. z is 0 for fewer than 2 values. It allocates nothing.
func MannKendall(ys []float64) (s int, z float64) {
	n := len(ys)
	for i := range ys {
		for j := i + 1; j < n; j++ {
			switch {
			case ys[j] > ys[i]:
				s++
			case ys[j] < ys[i]:
				s--
			}
		}
	}
	if n < 2 {
		return s, 0
	}
	v := float64(n) * float64(n-1) * float64(2*n+5) / 18
	return s, float64(s) / math.Sqrt(v)
}

// selectKth reorders a so that a[k] is the element a sorted a would have
// there, every element before it no greater and every one after no smaller,
// and returns a[k] (Hoare's quickselect with a median-of-three pivot).
func selectKth(a []float64, k int) float64 {
	lo, hi := 0, len(a)-1
	for hi > lo {
		mid := lo + (hi-lo)/2
		// Order a[lo], a[mid], a[hi]; the median of the three is the pivot.
		if a[mid] < a[lo] {
			a[mid], a[lo] = a[lo], a[mid]
		}
		if a[hi] < a[lo] {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if a[hi] < a[mid] {
			a[hi], a[mid] = a[mid], a[hi]
		}
		pivot := a[mid]
		i, j := lo, hi
		for i <= j {
			for a[i] < pivot {
				i++
			}
			for a[j] > pivot {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return a[k] // between j and i: equal to the pivot
		}
	}
	return a[k]
}
