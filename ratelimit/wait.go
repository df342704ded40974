package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/bounded-go/bounded/internal/backoff"
)

// Wait blocks until one event for key is admitted, ctx ends, or it is clear
// that ctx's deadline would pass first. It is WaitN(ctx, key, 1).
func (l *Limiter) Wait(ctx context.Context, key string) error {
	return l.WaitN(ctx, key, 1)
}

// WaitN blocks until n events for key are admitted (and counted), ctx ends,
// or it is clear that ctx's deadline would pass first.
//
// When the time left before ctx's deadline is not longer than the RetryAfter
// of a denial (the call after the wait needs time too), WaitN returns at once
// with an error matching context.DeadlineExceeded, instead of sleeping until
// the deadline to fail then (x/time/rate returns an error that does not
// match it, golang/go#54541). Otherwise it sleeps RetryAfter and asks again:
// other callers may have taken the room meanwhile, so one Wait can ask more
// than twice. Waiting uses the real clock (time.Now and timers), whatever
// Config.Now says.
//
// Errors other than the deadline's are AllowN's (ErrInvalidArgument) and
// ctx's own.
func (l *Limiter) WaitN(ctx context.Context, key string, n int) error {
	for {
		r, err := l.AllowN(ctx, key, n)
		if err != nil {
			return err
		}
		if r.Allowed {
			return nil
		}
		wait := r.RetryAfter
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			return fmt.Errorf("ratelimit: %s %q: waiting %s would pass the context deadline: %w",
				l.name, key, wait, context.DeadlineExceeded)
		}
		if !backoff.Sleep(ctx, wait) {
			return fmt.Errorf("ratelimit: %s %q: %w", l.name, key, ctx.Err())
		}
	}
}
