package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/backoff"
	"github.com/bounded-go/bounded/pool"
)

// Waiting in Acquire. The callers of one Semaphore waiting for a key form a
// queue, oldest first; only its head asks Redis, the others wait for their
// turn. The head is woken:
//
//   - by a release anywhere in the fleet: the release script publishes the
//     key on the Semaphore's channel when the key's waiting mark exists
//     (left by a waiter's denied attempt, PX three WaitRechecks), and the
//     subscriber (one per Semaphore, on a reserved connection) wakes that
//     key's head: one Pub/Sub delivery after the release;
//   - by the wait timer (one per Semaphore, armed at the earliest due time
//     of all heads) when the key's earliest lease ends, as the denied
//     attempt reported it: its holder may have died and stopped renewing,
//     and no release will come. A live holder has renewed it meanwhile;
//     the attempt then learns the new end. So a crashed holder's slot is
//     taken at most one round trip after its lease ends, at most LeaseTTL
//     after its last renewal;
//   - by the same timer after WaitRecheck at the latest: a wake-up lost
//     while the subscriber reconnected, or published by nobody (the mark
//     had expired), costs at most that;
//   - when the head before it leaves (admitted, or its ctx ended): the new
//     head asks at once;
//   - when the subscriber (re)subscribes: messages may have been missed.
//
// A wake-up is a one-slot channel, so one that comes while the head is
// asking is not lost: it asks again.

// semWaiters are the callers of one Semaphore waiting in Acquire.
type semWaiters struct {
	max   int
	rearm chan struct{} // one slot: the wait timer recomputes its due time
	done  chan struct{} // closed when the Semaphore's group closes

	mu     sync.Mutex
	keys   map[string]*keyWaiters
	n      int
	closed bool

	subscribed atomic.Bool
	wakes      atomic.Uint64
}

// keyWaiters is the queue of one key; due is when its head asks again
// (zero: not set, the head is asking).
type keyWaiters struct {
	list []*semWaiter
	due  time.Time
}

type semWaiter struct {
	key string
	ch  chan struct{} // one slot
}

func newSemWaiters(max int) *semWaiters {
	return &semWaiters{max: max, rearm: make(chan struct{}, 1), done: make(chan struct{}), keys: map[string]*keyWaiters{}}
}

// add queues a waiter for key; false when max wait already or the group
// has closed.
func (w *semWaiters) add(key string) (*semWaiter, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.n >= w.max {
		return nil, false
	}
	kw := w.keys[key]
	if kw == nil {
		kw = &keyWaiters{}
		w.keys[key] = kw
	}
	wt := &semWaiter{key: key, ch: make(chan struct{}, 1)}
	kw.list = append(kw.list, wt)
	w.n++
	return wt, true
}

func (w *semWaiters) isHead(wt *semWaiter) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	kw := w.keys[wt.key]
	return kw != nil && kw.list[0] == wt
}

// leave unqueues wt; a new head asks at once.
func (w *semWaiters) leave(wt *semWaiter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	kw := w.keys[wt.key]
	if kw == nil {
		return
	}
	for i, x := range kw.list {
		if x != wt {
			continue
		}
		kw.list = append(kw.list[:i:i], kw.list[i+1:]...)
		w.n--
		if len(kw.list) == 0 {
			delete(w.keys, wt.key)
		} else if i == 0 {
			kw.due = time.Time{}
			signal(kw.list[0].ch)
		}
		return
	}
}

// setDue makes the head wt ask again at due at the latest.
func (w *semWaiters) setDue(wt *semWaiter, due time.Time) {
	w.mu.Lock()
	if kw := w.keys[wt.key]; kw != nil && kw.list[0] == wt {
		kw.due = due
	}
	w.mu.Unlock()
	signal(w.rearm)
}

// wake wakes key's head: a slot of key was released.
func (w *semWaiters) wake(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if kw := w.keys[key]; kw != nil {
		signal(kw.list[0].ch)
	}
}

// wakeAll wakes every head (a resubscription: messages may be lost).
func (w *semWaiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, kw := range w.keys {
		signal(kw.list[0].ch)
	}
}

// wakeDue wakes the heads due by now and returns the next due time (zero:
// none).
func (w *semWaiters) wakeDue(now time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var next time.Time
	for _, kw := range w.keys {
		switch {
		case kw.due.IsZero():
		case !kw.due.After(now):
			kw.due = time.Time{}
			signal(kw.list[0].ch)
		case next.IsZero() || kw.due.Before(next):
			next = kw.due
		}
	}
	return next
}

func (w *semWaiters) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func (w *semWaiters) isClosed() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// close ends every wait for good: the group closed.
func (w *semWaiters) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.done)
	}
}

// run is the wait timer: one timer for all of the Semaphore's waiters,
// armed at the earliest due time of their heads, stopped while none is
// due. A lifecycle task.
func (w *semWaiters) run(ctx context.Context) error {
	defer w.close()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		if next := w.wakeDue(time.Now()); next.IsZero() {
			t.Stop()
		} else {
			t.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.rearm:
		case <-t.C:
		}
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// semSubscriberPing is how long the subscriber waits for a message before
// it checks its quiet connection with a PING: the Semaphore's idle Redis
// traffic.
const semSubscriberPing = 5 * time.Second

// subscribe is the release subscriber: one lifecycle task per started
// Semaphore, on one reserved connection. Its loop is the queue's room
// subscriber's: a step that fails backs off and goes round again, every
// (re)subscription wakes every waiting head, and the loop ends with ctx.
func (s *Semaphore) subscribe(ctx context.Context, res *pool.Reservation, w *semWaiters) error {
	var (
		mu       sync.Mutex
		sub      *pool.Subscription
		bo       backoff.Backoff
		pingSent bool
	)
	bo.Min, bo.Max = 50*time.Millisecond, time.Second
	closeSub := func() {
		mu.Lock()
		if sub != nil {
			_ = sub.Close()
			sub = nil
		}
		mu.Unlock()
	}
	// The subscription is closed as soon as ctx ends, which ends a
	// receive in progress.
	released := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(released)
		closeSub()
		_ = res.Release()
	})
	defer func() {
		if !stop() {
			<-released
		} else {
			closeSub()
			_ = res.Release()
		}
	}()
	defer w.subscribed.Store(false)

	for ctx.Err() == nil {
		mu.Lock()
		cur := sub
		mu.Unlock()
		if cur == nil {
			sctx, cancel := context.WithTimeout(ctx, semSubscriberPing)
			ns, err := res.Subscribe(sctx, s.channel)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					s.logf(slog.LevelWarn, "ratelimit: semaphore subscriber cannot subscribe", "err", err)
					bo.Wait(ctx)
				}
				continue
			}
			mu.Lock()
			if ctx.Err() != nil {
				mu.Unlock()
				_ = ns.Close()
				return nil
			}
			sub, cur = ns, ns
			mu.Unlock()
			pingSent = false
			w.subscribed.Store(true)
			w.wakeAll()
		}
		msg, err := cur.ReceiveTimeout(ctx, semSubscriberPing)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pingSent || cur.Ping(ctx) != nil {
					w.subscribed.Store(false)
					closeSub()
				}
				pingSent = true
				continue
			}
			w.subscribed.Store(false)
			closeSub()
			s.logf(slog.LevelWarn, "ratelimit: semaphore subscriber lost its connection", "err", err)
			bo.Wait(ctx)
			continue
		}
		bo.Reset()
		pingSent = false
		if m, ok := msg.(*redis.Message); ok {
			w.wakes.Add(1)
			w.wake(m.Payload)
		}
	}
	return nil
}
