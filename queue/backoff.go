package queue

import (
	"context"
	"time"

	"github.com/bounded-go/bounded/internal/backoff"
)

// retryDelay is the default delay before attempt+1 of a failed job:
// exponential from base, capped at max, with full jitter, which spreads
// retries of jobs that failed together. It is drawn from [1ms, d+1ms), d
// being the capped exponential delay: the 1ms keeps a retry from being due
// at once. A base <= 0 gives 0.
func retryDelay(attempt int, base, max time.Duration) time.Duration {
	d := backoff.Exp(attempt, base, max)
	if d <= 0 {
		return 0
	}
	return backoff.Full(d) + time.Millisecond
}

// Retries against a failing Redis: exponential from troubleMin to troubleMax
// with equal jitter, so a process never hot-loops while Redis is down and
// comes back within seconds when it returns.
const (
	troubleMin = 10 * time.Millisecond
	troubleMax = time.Second
)

// troubleBackoff paces the retries of one task against a failing Redis
// (backoff.Backoff from troubleMin to troubleMax). The zero value is ready
// to use. Not safe for concurrent use.
type troubleBackoff struct{ b backoff.Backoff }

func (t *troubleBackoff) init() {
	if t.b.Max == 0 {
		t.b = backoff.Backoff{Min: troubleMin, Max: troubleMax}
	}
}

func (t *troubleBackoff) reset() { t.b.Reset() }

func (t *troubleBackoff) next() time.Duration {
	t.init()
	return t.b.Next()
}

// wait sleeps for the next backoff or until ctx ends; it reports whether ctx
// is still live.
func (t *troubleBackoff) wait(ctx context.Context) bool {
	return backoff.Sleep(ctx, t.next())
}
