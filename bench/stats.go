package main

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// summary is the median and range of a metric's repetitions.
type summary struct {
	Median, Min, Max float64
	N                int
}

// summarize returns the median (the mean of the middle two for an even
// count), minimum and maximum of vs; N is 0 for no values.
func summarize(vs []float64) summary {
	if len(vs) == 0 {
		return summary{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return summary{Median: med, Min: s[0], Max: s[n-1], N: n}
}

// quantile returns the q-quantile (0..1) of sorted durations by the nearest
// rank below, as the in-package benchmarks do; 0 for none.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// fmtNum formats a value for the table: integers exactly, other values to
// three significant digits; thousands are separated by commas.
func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'f', -1, 64)
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return group(strconv.FormatFloat(v, 'f', 0, 64))
	}
	return group(strconv.FormatFloat(roundSig(v, 3), 'f', -1, 64))
}

// roundSig rounds v to n significant digits: the float nearest to the
// decimal, so that it prints without a tail of 9s.
func roundSig(v float64, n int) float64 {
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'e', n-1, 64), 64)
	if err != nil {
		return v
	}
	return r
}

// group puts commas between the thousands of a formatted number's integer
// part: "-41237.5" -> "-41,237.5".
func group(s string) string {
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	intPart, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if hasFrac {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return sign + b.String()
}

// fmtSummary renders "median (min-max)", or the median alone when every
// repetition gave the same value; "" when there is none.
func fmtSummary(s summary) string {
	if s.N == 0 {
		return ""
	}
	m := fmtNum(s.Median)
	lo, hi := fmtNum(s.Min), fmtNum(s.Max)
	if lo == hi {
		return m
	}
	return m + " (" + lo + "-" + hi + ")"
}

// fmtRatio renders a/b to two significant digits, or "-" when it means
// nothing (b is zero, a value is missing).
func fmtRatio(a, b summary) string {
	if a.N == 0 || b.N == 0 || b.Median == 0 {
		return "-"
	}
	return group(strconv.FormatFloat(roundSig(a.Median/b.Median, 2), 'f', -1, 64)) + "x"
}
