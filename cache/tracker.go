package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// loadTracker counts flights in progress, gives them a context that ends
// when the cache's group closes, and lets that Close wait for them. It also
// holds the semaphore of Config.MaxLoads: a flight takes a slot before it
// waits for another instance's load or calls its loader.
type loadTracker struct {
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{} // one element per flight past its Redis read

	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed when n drops to 0 after close

	// done mirrors closed for readers without mu: every call checks it
	// first.
	done atomic.Bool
}

func (t *loadTracker) init(maxLoads int) {
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.slots = make(chan struct{}, maxLoads)
}

// startLoad takes one of the Config.MaxLoads slots, without waiting: it
// reports false when they are all taken. endLoad gives it back.
func (t *loadTracker) startLoad() bool {
	select {
	case t.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (t *loadTracker) endLoad() { <-t.slots }

// begin starts a flight on a context that carries parent's values, ends
// after d or when the tracker closes, and is not cancelled with parent.
func (t *loadTracker) begin(parent context.Context, d time.Duration) (context.Context, context.CancelFunc, bool) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, nil, false
	}
	t.n++
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), d)
	stop := context.AfterFunc(t.ctx, cancel)
	return ctx, func() { stop(); cancel() }, true
}

func (t *loadTracker) end() {
	t.mu.Lock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

// isClosed reports whether the cache's group has closed.
func (t *loadTracker) isClosed() bool { return t.done.Load() }

func (t *loadTracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// close cancels the flights in progress, refuses new ones, and waits for
// them to return or ctx to end.
func (t *loadTracker) close(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	t.done.Store(true)
	t.cancel()
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle, n := t.idle, t.n
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d load(s) still running: %w", n, ctx.Err())
	}
}
