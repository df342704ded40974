// Package backoff is the one exponential backoff with jitter, and the one
// context-aware sleep, that the bounded packages share.
//
// Delays double from Min up to Max. Two jitters are offered: Equal draws
// uniformly from [d/2, d] (retries against a failing Redis: never sooner
// than half the delay, so a process cannot hot-loop), Full draws from
// [0, d) (job retries, which should spread as widely as possible).
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Exp returns min doubled n-1 times, capped at max: the delay before the
// nth retry. n < 1 counts as 1; min <= 0 gives 0. It never overflows.
func Exp(n int, min, max time.Duration) time.Duration {
	if min <= 0 {
		return 0
	}
	d := min
	for i := 1; i < n && d < max; i++ {
		if d > max/2 { // doubling would pass max, or overflow
			return max
		}
		d *= 2
	}
	if d > max {
		return max
	}
	return d
}

// Equal returns a duration drawn uniformly from [d/2, d]; 0 for d <= 0.
func Equal(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d-d/2+1)
}

// Full returns a duration drawn uniformly from [0, d); 0 for d <= 0.
func Full(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// Backoff paces retries of one failing operation: Next returns
// Equal(Exp(n, Min, Max)) for the nth consecutive call, Reset starts over
// after a success. The zero value never waits. Not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the delay before the next retry and counts it.
func (b *Backoff) Next() time.Duration {
	if b.n < 64 {
		b.n++
	}
	return Equal(Exp(b.n, b.Min, b.Max))
}

// Reset forgets earlier failures.
func (b *Backoff) Reset() { b.n = 0 }

// Failures reports how many Next calls there were since the last Reset
// (saturating at 64).
func (b *Backoff) Failures() int { return b.n }

// Wait sleeps for Next() or until ctx ends; it reports whether ctx is still
// live.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep waits for d or until ctx ends; it reports whether ctx is still live.
// A d <= 0 returns at once.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
