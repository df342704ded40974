package cache

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/backoff"
	"github.com/bounded-go/bounded/pool"
)

// Subscriber backoff after consecutive failures: the first retry is at once
// (go-redis has usually redialled already), then 50ms doubling to 1s, with
// equal jitter so that instances do not reconnect in step. The cap is how
// late a subscriber may find Redis again after an outage, and until it does
// its local copies may outlive writes other instances make meanwhile (its
// flush on resubscribing ends that). 1s, as the queue's, costs one refused
// dial a second per cache while Redis is down; 5s kept subscribers away for
// up to 5s after Redis was back (TestRedisRestartMidRun_Server).
const (
	retryMin = 50 * time.Millisecond
	retryMax = time.Second
)

// retryDelay is the wait after the given number of consecutive failures.
func retryDelay(failures int) time.Duration {
	if failures <= 1 {
		return 0
	}
	return backoff.Equal(backoff.Exp(failures-1, retryMin, retryMax))
}

// subscriber is the invalidation subscriber: one lifecycle task per started
// cache, on one reserved connection. It subscribes, applies the messages,
// pings a connection that has been silent for PingInterval and replaces one
// that does not answer, and flushes the local tier on every (re)subscription.
type subscriber[V any] struct {
	c   *Cache[V]
	res *pool.Reservation

	mu  sync.Mutex
	sub *pool.Subscription // nil while there is none

	failures int  // consecutive failures, for the backoff
	pingSent bool // a PING is out, unanswered, since the last message
}

// subscribe runs the invalidation subscriber until ctx ends.
func (c *Cache[V]) subscribe(ctx context.Context, res *pool.Reservation) error {
	s := &subscriber[V]{c: c, res: res}
	// go-redis does not watch the context while it waits for a message, nor
	// while Reservation.Subscribe waits for Redis to confirm the
	// subscription; closing the subscription ends the first wait when the
	// group closes, releasing the reservation (which closes its client and
	// the connection being subscribed) the second. The reservation is done
	// with then: its closer, which releases it too, runs after this task
	// returns, and finds it released: this task waits for AfterFunc's
	// goroutine, so that by the time the group's Close returns the
	// reservation is back in the pool.
	released := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(released)
		s.close()
		_ = res.Release()
	})
	defer func() {
		if !stop() {
			<-released
		}
	}()
	defer s.close()
	defer c.subscribed.Store(false)

	for ctx.Err() == nil {
		sub := s.current()
		if sub == nil {
			if sub = s.connect(ctx); sub == nil {
				continue
			}
		}
		s.receive(ctx, sub)
	}
	return nil
}

func (s *subscriber[V]) current() *pool.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sub
}

// close closes the subscription, if any; the next round subscribes anew.
func (s *subscriber[V]) close() {
	s.mu.Lock()
	if s.sub != nil {
		_ = s.sub.Close()
		s.sub = nil
	}
	s.mu.Unlock()
}

// connect subscribes to the cache's channel and flushes the local tier. It
// returns nil when that failed (after the backoff) or ctx ended.
func (s *subscriber[V]) connect(ctx context.Context) *pool.Subscription {
	// A peer that takes the connection and never confirms the subscription
	// must not hold the subscriber, and the invalidations it misses
	// meanwhile, for ever: go-redis reads the confirmation with the
	// context's deadline as the socket's.
	sctx, cancel := context.WithTimeout(ctx, s.c.cfg.PingInterval)
	sub, err := s.res.Subscribe(sctx, s.c.channel)
	cancel()
	if err != nil {
		s.fail(ctx, "cache: invalidation subscriber cannot subscribe", err)
		return nil
	}
	s.mu.Lock()
	if ctx.Err() != nil { // close already ran
		s.mu.Unlock()
		_ = sub.Close()
		return nil
	}
	s.sub = sub
	s.mu.Unlock()
	s.pingSent = false
	s.c.subscribedNow()
	return sub
}

// receive waits up to PingInterval for one message and acts on it.
func (s *subscriber[V]) receive(ctx context.Context, sub *pool.Subscription) {
	msg, err := sub.ReceiveTimeout(ctx, s.c.cfg.PingInterval)
	switch {
	case err == nil:
		s.failures, s.pingSent = 0, false
		s.handle(msg)
	case ctx.Err() != nil:
	case isTimeout(err):
		s.silent(ctx, sub)
	case unreadableMessage(err):
		// Read, but not understood (tracking's flush notice): the
		// connection is fine.
		s.failures, s.pingSent = 0, false
		s.c.unreadable(err)
	default:
		// go-redis has closed the connection and redials on the next
		// Receive; the confirmation of its new subscription flushes the
		// local tier (handle).
		s.c.subscribed.Store(false)
		s.fail(ctx, "cache: invalidation subscriber lost its connection", err)
	}
}

// silent handles an interval without a message: the first sends a PING, a
// second one (or a PING that fails) means the connection is dead without
// having said so, and the subscriber starts over on a new one.
func (s *subscriber[V]) silent(ctx context.Context, sub *pool.Subscription) {
	if !s.pingSent && sub.Ping(ctx) == nil {
		s.pingSent = true
		return
	}
	s.c.log.Warn("cache: invalidation subscriber's connection does not answer; reconnecting")
	s.c.subscribed.Store(false)
	s.close()
}

func (s *subscriber[V]) handle(msg any) {
	switch m := msg.(type) {
	case *redis.Message:
		if m.Channel == trackingChannel {
			s.c.applyTracked(m)
			return
		}
		s.c.apply(m.Payload)
	case *redis.Subscription:
		if m.Kind == "subscribe" {
			s.c.subscribedNow()
		}
	}
}

// fail logs a failure and waits out the backoff (or until ctx ends).
func (s *subscriber[V]) fail(ctx context.Context, msg string, err error) {
	s.failures++
	s.c.log.Warn(msg, "err", err, "failures", s.failures)
	backoff.Sleep(ctx, retryDelay(s.failures))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// subscribedNow runs whenever the subscription starts or starts again.
// Messages sent while there was none are lost, so everything local goes.
func (c *Cache[V]) subscribedNow() {
	c.flushLocal()
	c.subscribedMode()
	c.st.subscribes.Add(1)
	c.subscribed.Store(true)
}
