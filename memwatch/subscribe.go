package memwatch

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// ErrTooManySubscribers is returned by Subscribe when Config.MaxSubscribers
// subscriptions are open.
var ErrTooManySubscribers = errors.New("memwatch: too many subscribers")

// MaxSubscriptionBuffer bounds the buffer a Subscription may ask for. Alerts
// are rare (at most one raise and one clear per kind per sample), so a reader
// that needs more is not reading.
const MaxSubscriptionBuffer = 1024

// subscribers is the set of open subscriptions of a Watcher.
type subscribers struct {
	mu      sync.Mutex
	max     int
	list    []*Subscription
	dropped atomic.Uint64 // over every subscription, closed ones included
}

// Subscription receives a Watcher's alerts on a bounded channel. When the
// channel is full the alert is dropped and counted rather than waited for: a
// slow reader never delays sampling.
//
// Subscriptions are made by Watcher.Subscribe; the zero value is not usable.
// A Subscription is safe for concurrent use. Whoever subscribed must Close
// it: the Watcher does not close it when its group closes.
type Subscription struct {
	set     *subscribers
	ch      chan Alert
	dropped atomic.Uint64
	closed  bool // guarded by set.mu
}

// Subscribe returns a subscription to alerts raised and cleared from now on,
// with a channel buffer of buffer alerts, in [1, MaxSubscriptionBuffer]. It
// returns ErrTooManySubscribers when Config.MaxSubscribers are open.
func (w *Watcher) Subscribe(buffer int) (*Subscription, error) {
	if buffer < 1 || buffer > MaxSubscriptionBuffer {
		return nil, fmt.Errorf("memwatch: Subscribe: buffer must be in [1, %d], got %d", MaxSubscriptionBuffer, buffer)
	}
	set := &w.subs
	set.mu.Lock()
	defer set.mu.Unlock()
	if len(set.list) >= set.max {
		return nil, fmt.Errorf("%w: %d open", ErrTooManySubscribers, len(set.list))
	}
	s := &Subscription{set: set, ch: make(chan Alert, buffer)}
	set.list = append(set.list, s)
	return s, nil
}

// C returns the channel alerts arrive on. It is closed by Close.
func (s *Subscription) C() <-chan Alert { return s.ch }

// Dropped returns how many alerts this subscription lost because its buffer
// was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes its channel; alerts still buffered
// can be read. It is idempotent.
func (s *Subscription) Close() {
	set := s.set
	set.mu.Lock()
	defer set.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for i, x := range set.list {
		if x == s {
			set.list = slices.Delete(set.list, i, i+1) // zeroes the vacated slot
			break
		}
	}
	close(s.ch)
}

// publish offers a to every open subscription without waiting. The sends
// cannot block, so holding the lock (which keeps Close from closing a
// channel mid-send) costs nothing.
func (set *subscribers) publish(a Alert) {
	set.mu.Lock()
	defer set.mu.Unlock()
	for _, s := range set.list {
		select {
		case s.ch <- a:
		default:
			s.dropped.Add(1)
			set.dropped.Add(1)
		}
	}
}
