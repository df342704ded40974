package pool

import (
	"context"
	"time"
)

// timeoutKey marks a context made by WithTimeout; its value is the parent.
type timeoutKey struct{}

// WithTimeout returns a copy of ctx that ends after d at the latest: a
// component's own bound on one call to Redis (ratelimit's Config.Timeout),
// as opposed to its caller's deadline. A command that runs out this bound
// while ctx's own deadline has not passed counts toward marking Redis down,
// as an I/O timeout does: Redis too slow for the component is as unusable
// to it as Redis down, and the breaker then lets its callers fail fast. A
// command that runs out ctx's deadline stays neutral, as always. Call
// cancel when the call returns.
func WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	tctx, cancel := context.WithTimeout(ctx, d)
	return context.WithValue(tctx, timeoutKey{}, ctx), cancel
}

// ownTimeout reports whether ctx, which has ended or run out its deadline,
// comes from WithTimeout whose parent is still live: the component's bound
// ended the call, not its caller.
func ownTimeout(ctx context.Context) bool {
	parent, ok := ctx.Value(timeoutKey{}).(context.Context)
	return ok && parent.Err() == nil && !deadlinePassed(parent)
}
