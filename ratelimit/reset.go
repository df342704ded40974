package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/bounded-go/bounded/pool"
)

// Reset forgets everything about key: the state of every window (Allow's,
// and each position of AllowLimits), in Redis with one DEL, and this
// process's denied-cache entry and FailLocal bucket for it. The next call
// finds full buckets.
//
// Other processes' denied caches are not reached: one that denied key
// before the Reset may keep answering its denial until that entry ends (at
// most the RetryAfter it gave, and never for a call whose limit differs).
// A call decided concurrently with a Reset may land on either side of it.
//
// The local state is forgotten even when Redis cannot be reached; the error
// is then the failed call's (pool.ErrUnavailable while Redis is marked
// down), and Redis's state still holds. Reset waits for Redis at most
// Config.Timeout, like every call. An empty key is ErrInvalidArgument.
func (l *Limiter) Reset(ctx context.Context, key string) error {
	if key == "" {
		return fmt.Errorf("%w: %s: empty key", ErrInvalidArgument, l.name)
	}
	err := l.del(ctx, key)
	// After the DEL, so that a denial stored from the state it deleted is
	// dropped too.
	l.forget(key)
	if err != nil {
		if cerr := callerEnded(ctx, err); cerr != nil {
			err = cerr
		}
		return fmt.Errorf("ratelimit: %s %q: reset: %w", l.name, key, err)
	}
	return nil
}

func (l *Limiter) del(ctx context.Context, key string) error {
	ctx, err := l.p.AdmitContext(ctx)
	if err != nil {
		return err
	}
	keys := make([]string, MaxWindows)
	for i := range keys {
		keys[i] = l.windowKey(key, i)
	}
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > l.cfg.Timeout {
		var cancel context.CancelFunc
		ctx, cancel = pool.WithTimeout(ctx, l.cfg.Timeout)
		defer cancel()
	}
	// One slot: every window's key carries the limiter's hash tag.
	return l.p.Client().Del(ctx, keys...).Err()
}

// forget drops key from the local caches.
func (l *Limiter) forget(key string) {
	if l.denied != nil {
		l.denied.drop(key)
	}
	if l.local != nil {
		l.local.drop(key)
	}
}
