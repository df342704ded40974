package queue

import (
	"context"
	"math/rand/v2"
	"time"
)

// retryDelay is the default delay before attempt+1 of a failed job:
// exponential from base, capped at max, with full jitter (a uniform draw in
// [0, delay)), which spreads retries of jobs that failed together.
func retryDelay(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d))) + time.Millisecond
}

// troubleBackoff paces retries against a failing Redis: exponential from
// 10ms to 1s with jitter, so a process never hot-loops while Redis is down
// and comes back within seconds when it returns. Not safe for concurrent use.
type troubleBackoff struct{ n int }

const (
	troubleMin = 10 * time.Millisecond
	troubleMax = time.Second
)

func (b *troubleBackoff) reset() { b.n = 0 }

func (b *troubleBackoff) next() time.Duration {
	d := troubleMin << min(b.n, 20)
	if d > troubleMax || d <= 0 {
		d = troubleMax
	} else {
		b.n++
	}
	// Between half and all of d.
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// wait sleeps for the next backoff or until ctx ends; it reports whether ctx
// is still live.
func (b *troubleBackoff) wait(ctx context.Context) bool {
	return sleepCtx(ctx, b.next())
}

// sleepCtx sleeps for d or until ctx ends; it reports whether ctx is still
// live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
