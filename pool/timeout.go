package pool

import (
	"context"
	"sync/atomic"
	"time"
)

// timeoutKey marks a context made by WithTimeout; its value is a *bound.
type timeoutKey struct{}

// bound is a component's own bound on a call, and the context that carries
// it (one allocation instead of a value context around it): the caller's
// context it was made from, its deadline, and when the call's last command
// got its lane slot (UnixNano; 0 before it did).
type bound struct {
	context.Context // the timer context that ends at deadline
	parent          context.Context
	deadline        time.Time
	d               time.Duration
	entered         atomic.Int64
}

func (b *bound) Value(key any) any {
	if key == (timeoutKey{}) {
		return b
	}
	return b.Context.Value(key)
}

// WithTimeout returns a copy of ctx that ends after d at the latest: a
// component's own bound on one call to Redis (ratelimit's Config.Timeout),
// as opposed to its caller's deadline. A command that runs out this bound
// while ctx's own deadline has not passed counts toward marking Redis down,
// as an I/O timeout does: Redis too slow for the component is as unusable
// to it as Redis down, and the breaker then lets its callers fail fast. A
// command that runs out ctx's deadline stays neutral, as always, and so
// does one that spent more than half of d waiting in this process for a
// lane slot: that says more about this process's load than about Redis.
// Call cancel when the call returns.
func WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	tctx, cancel := context.WithTimeout(ctx, d)
	dl, _ := tctx.Deadline()
	return &bound{Context: tctx, parent: ctx, deadline: dl, d: d}, cancel
}

// markEntered records that a command sent with ctx got its lane slot now.
func markEntered(ctx context.Context, now time.Time) {
	if b, ok := ctx.Value(timeoutKey{}).(*bound); ok {
		b.entered.Store(now.UnixNano())
	}
}

// ownTimeout reports whether ctx, which has ended or run out its deadline,
// comes from WithTimeout whose parent is still live, and whose command had
// at least half of the bound to itself once it held a lane slot: the
// component's bound ended the call, not its caller nor a queue here.
func ownTimeout(ctx context.Context) bool {
	b, ok := ctx.Value(timeoutKey{}).(*bound)
	if !ok || b.parent.Err() != nil || deadlinePassed(b.parent) {
		return false
	}
	if e := b.entered.Load(); e != 0 && b.deadline.Sub(time.Unix(0, e)) < b.d/2 {
		return false
	}
	return true
}
