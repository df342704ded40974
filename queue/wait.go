package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/backoff"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// Producer-side waiting (WaitForRoom). A refused producer that waits leaves
// its mark in Redis in the same script that refused it (the waiters key,
// holding the limit, with a TTL of three rechecks), so that no drain between
// the refusal and the wait goes unnoticed: the consumers' acker sees the
// mark and publishes on the queue's room channel how many jobs fit. One
// subscriber per Queue and process (Queue.Start), on one reserved
// connection, wakes that many local waiters, oldest first; they try again,
// and those that still do not fit wait again.
//
// A wake-up can be lost (the subscriber reconnecting, a message sent while
// the acker's pipeline failed, workers whose Config has no MaxLen): every
// waiter also tries again after roomRecheck (with jitter, [1/2, 1] of it),
// so a lost wake-up costs at most that long. The subscriber wakes every
// waiter when it (re)subscribes, since messages may have been missed.

// roomRecheck bounds how long a lost wake-up keeps a waiting producer
// waiting.
const roomRecheck = time.Second

// DefaultMaxWaiters is the default of Config.MaxWaiters.
const DefaultMaxWaiters = 1000

// ErrTooManyWaiters: an enqueue with WaitForRoom found the queue full and
// Config.MaxWaiters producers of this process already waiting for it (for
// room in the queue or in any of its partitions). The error also matches
// ErrQueueFull (and carries its *FullError, or the partition's refusal).
var ErrTooManyWaiters = errors.New("queue: too many producers waiting for room")

// ErrNotStarted: an enqueue with WaitForRoom found the queue full on a Queue
// that was not started (Queue.Start), or whose group has closed: nobody
// would wake it. The error also matches ErrQueueFull.
var ErrNotStarted = errors.New("queue: not started (WaitForRoom needs Queue.Start)")

// WaitForRoom makes an enqueue to a bounded queue (Config.MaxLen) that finds
// it full wait until there is room or ctx ends, instead of failing with
// ErrQueueFull. Consumers wake waiting producers as they drain the queue;
// see Queue.Start, which a waiting producer's Queue needs. On an unbounded
// queue it changes nothing. An EnqueueBatch waits until the whole batch
// fits; a batch of more jobs than MaxLen, which never fits, fails at once.
// A Durable enqueue does not wait (it returns the *FullError).
//
// A partitioned enqueue (Partition) refused by Config.MaxPartitions or
// Config.MaxPartitionLen waits the same way: the take of a job of its full
// partition wakes it (as many producers as jobs taken), and the take of
// the last job of a partition wakes those waiting to start a new one. It
// waits for what refused it last (MaxLen, MaxPartitions or its partition),
// and a batch of more jobs than MaxPartitionLen fails at once. A waiting
// job taken out by Cancel or Inspector.Delete wakes the producers waiting
// for the room it made in the same way. A lost wake-up (the subscriber
// reconnecting, room made by a process of an earlier version) is made up
// by the waiters' recheck, within a second. A waiter whose ctx ends returns
// an error matching ctx's error and the refusal (ErrQueueFull and, for a
// partition, ErrPartitionFull or ErrTooManyPartitions); nothing was
// enqueued.
func WaitForRoom() EnqueueOption {
	return func(o *enqueueOpts) error { o.wait = true; return nil }
}

// waiters are the producers of one Queue waiting for room in this process.
type waiters struct {
	mu      sync.Mutex
	list    []waiter // oldest first; each closed once woken
	seq     uint64   // the last waiter's number
	closed  bool
	max     int
	recheck time.Duration // roomRecheck; tests make it long

	subscribed atomic.Bool
	wakes      atomic.Uint64 // messages received

	results *resultWaiters // producers waiting for jobs to end (Queue.Wait)
}

// waiter is one waiting producer: its number keeps its place (the oldest
// first) across the retries it makes when woken.
type waiter struct {
	seq uint64
	on  string // what it waits for: roomLen, roomNewPart or a partition (parts_wait.go)
	ch  chan struct{}
}

// add registers a waiter for room of kind on; false when there are max
// already (of every kind). A producer woken and refused again passes its
// number (seq > 0): it goes back to its place, and max, which admitted it
// once, does not turn it away.
func (r *waiters) add(seq uint64, on string) (waiter, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return waiter{}, false, ErrNotStarted
	}
	if seq == 0 && len(r.list) >= r.max {
		return waiter{}, false, nil
	}
	if seq == 0 {
		r.seq++
		seq = r.seq
	}
	w := waiter{seq: seq, on: on, ch: make(chan struct{})}
	i := len(r.list)
	for i > 0 && r.list[i-1].seq > seq {
		i--
	}
	r.list = append(r.list, waiter{})
	copy(r.list[i+1:], r.list[i:])
	r.list[i] = w
	return w, true, nil
}

// remove unregisters w, and reports whether it was still waiting (false:
// it was woken).
func (r *waiters) remove(w waiter) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.list {
		if x.ch == w.ch {
			r.list = append(r.list[:i:i], r.list[i+1:]...)
			return true
		}
	}
	return false
}

// wake wakes the n oldest waiters for room of kind on (all of them for
// n < 0).
func (r *waiters) wake(on string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.list[:0:0]
	for _, w := range r.list {
		if w.on == on && n != 0 {
			close(w.ch)
			n--
			continue
		}
		kept = append(kept, w)
	}
	r.list = kept
}

// wakeAll wakes every waiter, whatever it waits for.
func (r *waiters) wakeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.list {
		close(w.ch)
	}
	r.list = nil
}

// close wakes every waiter for good: the group closed.
func (r *waiters) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wakeAll()
	r.results.close()
}

func (r *waiters) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.list)
}

// wait waits for w to be woken, for the recheck, or for ctx. A wake-up
// that comes with the end of ctx, which this producer cannot use, goes to
// the next waiter.
func (r *waiters) wait(ctx context.Context, w waiter) error {
	t := time.NewTimer(backoff.Equal(r.recheck))
	defer t.Stop()
	select {
	case <-w.ch:
	case <-t.C:
		r.remove(w)
	case <-ctx.Done():
	}
	if err := ctx.Err(); err != nil {
		if !r.remove(w) {
			r.wake(w.on, 1)
		}
		return err
	}
	return nil
}

// Start starts what waiting producers (WaitForRoom) need: a subscriber to
// the queue's room channel, a lifecycle task on g holding one connection of
// the pool's blocking lane, reserved here (a pool whose blocking lane is used
// up fails Start with pool.ErrOverBudget). Enqueues without WaitForRoom,
// and workers, do not need it. Start may be called once per Queue; a second
// call fails with ErrAlreadyStarted. When g closes, waiting producers return
// ErrNotStarted (matching ErrQueueFull).
func (q *Queue) Start(g *lifecycle.Group) error {
	if g == nil {
		return q.errorf("Start: nil group")
	}
	q.startMu.Lock()
	defer q.startMu.Unlock()
	if q.room.Load() != nil {
		return q.errorf("Start: %w", ErrAlreadyStarted)
	}
	name := "queue:" + q.name + " room"
	res, err := q.p.ReserveBlocking(name, 1)
	if err != nil {
		return q.errorf("Start: %w", err)
	}
	r := &waiters{max: q.cfg.MaxWaiters, recheck: q.recheck, results: newResultWaiters(q.cfg.MaxWaiters)}
	if err := g.Go(name, func(ctx context.Context) error {
		defer r.close()
		return q.subscribe(ctx, res, r)
	}); err != nil {
		_ = res.Release()
		return q.errorf("Start: %w", err)
	}
	q.room.Store(r)
	return nil
}

// waitingEnqueue is enqueueBounded, waiting for room with wait set.
func (q *Queue) waitingEnqueue(ctx context.Context, prs []prepared, wait bool) ([]bool, error) {
	return q.waitForRoom(ctx, prs, wait, func(mark bool) ([]bool, error) { return q.enqueueBounded(ctx, prs, mark) })
}

// waitForRoom runs try, an enqueue of prs, and with wait, while it is
// refused for room, waits for room and tries again. try(true) marks the
// producer as waiting when refused, in the refusing script, so that no room
// made between the refusal and the wait goes unnoticed. A producer waits
// for what refused it last (the queue's MaxLen, or a partition's bounds:
// roomFor); jobs that never fit (a batch of more than the limit) do not
// wait.
func (q *Queue) waitForRoom(ctx context.Context, prs []prepared, wait bool, try func(mark bool) ([]bool, error)) ([]bool, error) {
	added, err := try(false)
	on, ok := q.roomFor(prs, err)
	if !wait || !ok {
		return added, err
	}
	r := q.room.Load()
	if r == nil {
		return nil, fmt.Errorf("%w (%w)", err, ErrNotStarted)
	}
	full := err
	var seq uint64 // 0 until admitted
	woken := false
	for {
		w, ok, err := r.add(seq, on)
		if err != nil {
			return nil, fmt.Errorf("%w (%w)", full, err)
		}
		if !ok {
			return nil, fmt.Errorf("%w (%w: %d wait already, Config.MaxWaiters)", full, ErrTooManyWaiters, r.max)
		}
		seq = w.seq
		added, err = try(true)
		next, refused := q.roomFor(prs, err)
		if !refused {
			if !r.remove(w) || (err != nil && woken) {
				r.wake(on, 1) // a wake-up this producer does not use
			}
			return added, err
		}
		full = err
		if next != on {
			// Refused for another reason now: wait for that one, marked
			// by the refusal (in the same place), after one more try.
			if !r.remove(w) {
				r.wake(on, 1)
			}
			on = next
			continue
		}
		if err := r.wait(ctx, w); err != nil {
			return nil, fmt.Errorf("waiting for room: %w (%w)", err, full)
		}
		woken = true
	}
}

// subscribe is the room subscriber: one lifecycle task per started Queue,
// one reserved connection. Its loop is the cache's invalidation
// subscriber's (see cache/invalidate.go for the reasoning on closing). A
// step that fails backs off and goes round again; a backoff ends only when
// ctx ends, and then so does the loop.
func (q *Queue) subscribe(ctx context.Context, res *pool.Reservation, r *waiters) error {
	s := &roomSubscriber{q: q, ctx: ctx, res: res, r: r}
	s.bo.Min, s.bo.Max = 50*time.Millisecond, time.Second
	defer s.releaseWhenDone()()
	defer s.closeSub()
	defer r.subscribed.Store(false)

	for ctx.Err() == nil {
		sub := s.current()
		if sub == nil {
			if sub = s.resubscribe(); sub == nil {
				continue
			}
		}
		msg, err := sub.ReceiveTimeout(ctx, subscriberPing)
		if err != nil {
			s.receiveFailed(sub, err)
			continue
		}
		s.received(msg)
	}
	return nil
}

// roomSubscriber is the state of subscribe.
type roomSubscriber struct {
	q        *Queue
	ctx      context.Context
	res      *pool.Reservation
	r        *waiters
	bo       backoff.Backoff
	pingSent bool // a PING checks the quiet connection

	mu  sync.Mutex
	sub *pool.Subscription // nil while not subscribed
}

// releaseWhenDone closes the subscription and gives the reserved
// connection back when ctx ends. The returned func gives it back at once
// if ctx has not ended, and returns only once it is back in the pool.
func (s *roomSubscriber) releaseWhenDone() (wait func()) {
	released := make(chan struct{})
	stop := context.AfterFunc(s.ctx, func() {
		defer close(released)
		s.closeSub()
		_ = s.res.Release()
	})
	return func() {
		if !stop() {
			<-released
		} else {
			_ = s.res.Release()
		}
	}
}

// closeSub closes the subscription, if any.
func (s *roomSubscriber) closeSub() {
	s.mu.Lock()
	if s.sub != nil {
		_ = s.sub.Close()
		s.sub = nil
	}
	s.mu.Unlock()
}

// current is the subscription, nil while not subscribed.
func (s *roomSubscriber) current() *pool.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sub
}

// resubscribe subscribes to the room channel and wakes every waiter:
// messages sent while there was no subscription are lost. It returns nil
// when SUBSCRIBE failed (after a backoff) or ctx ended.
func (s *roomSubscriber) resubscribe() *pool.Subscription {
	sctx, cancel := context.WithTimeout(s.ctx, subscriberPing)
	ns, err := s.res.Subscribe(sctx, s.q.k.roomChannel(), s.q.k.doneChannel())
	cancel()
	if err != nil {
		s.q.cfg.Logger.Warn("queue: room subscriber cannot subscribe", "queue", s.q.name, "err", err)
		s.bo.Wait(s.ctx)
		return nil
	}
	if !s.keep(ns) {
		_ = ns.Close()
		return nil
	}
	s.pingSent = false
	s.r.subscribed.Store(true)
	s.r.wakeAll()
	s.r.results.wakeAll()
	return ns
}

// keep makes ns the subscription, unless ctx ended (then the AfterFunc of
// releaseWhenDone may have run already, and would not close it).
func (s *roomSubscriber) keep(ns *pool.Subscription) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.sub = ns
	return true
}

// receiveFailed deals with a receive that returned no message: a quiet
// connection is checked with a PING, and the subscription dropped when a
// PING went unanswered; after any other error the subscriber backs off
// and receives again.
func (s *roomSubscriber) receiveFailed(sub *pool.Subscription, err error) {
	if s.ctx.Err() != nil {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if s.pingSent || sub.Ping(s.ctx) != nil {
			s.r.subscribed.Store(false)
			s.closeSub()
			return
		}
		s.pingSent = true
		return
	}
	s.r.subscribed.Store(false)
	s.q.cfg.Logger.Warn("queue: room subscriber lost its connection", "queue", s.q.name, "err", err)
	s.bo.Wait(s.ctx)
}

// received wakes waiters for a message: as many as it says fit (all when
// it says nothing usable), or all on a (re)subscription.
func (s *roomSubscriber) received(msg any) {
	s.bo.Reset()
	s.pingSent = false
	switch m := msg.(type) {
	case *redis.Message:
		if m.Channel == s.q.k.doneChannel() {
			s.r.results.wake(m.Payload)
			return
		}
		s.r.wakes.Add(1)
		if on, n := parseRoom(m.Payload); n > 0 {
			s.r.wake(on, n)
		} else {
			s.r.wakeAll()
		}
	case *redis.Subscription:
		if m.Kind == "subscribe" {
			s.r.subscribed.Store(true)
			s.r.wakeAll()
		}
	}
}

// subscriberPing is how long the room subscriber waits for a message before
// it checks its connection with a PING.
const subscriberPing = 5 * time.Second
