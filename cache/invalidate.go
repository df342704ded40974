package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// An invalidation message is
//
//	'I' op(1) instance-id(8, big endian) [uvarint len, key]...
//
// op 'k' lists keys whose local copies must go after a Set or a Delete (a
// GetOrLoad that starts after it must not join a load already running,
// which may have read the data before the change); op 'l' lists keys a load
// just filled (local copies go, loads already running are fine); op 'f'
// says "drop everything". A message never exceeds
// maxMessageBytes: a Delete of many keys is split into several. A key too
// long for one would be covered by a flush, but the cache refuses such keys
// (MaxKeyBytes), so only a message from elsewhere can ask for one.
const (
	msgMagic        = 'I'
	opKeys          = 'k'
	opLoaded        = 'l'
	opFlush         = 'f'
	msgHeader       = 10
	maxMessageBytes = 16 << 10
)

// invalidationMessages encodes the invalidation of keys sent by instance id
// after a Set or Delete.
func invalidationMessages(id uint64, keys []string) []string {
	return keyMessages(id, opKeys, keys)
}

// keyMessages encodes keys under op (opKeys or opLoaded).
func keyMessages(id uint64, op byte, keys []string) []string {
	var msgs []string
	var b []byte
	flush := false
	header := func(op byte) []byte {
		h := make([]byte, msgHeader, msgHeader+64)
		h[0], h[1] = msgMagic, op
		binary.BigEndian.PutUint64(h[2:], id)
		return h
	}
	for _, k := range keys {
		need := binary.MaxVarintLen64 + len(k)
		if msgHeader+need > maxMessageBytes {
			flush = true
			continue
		}
		if b != nil && len(b)+need > maxMessageBytes {
			msgs = append(msgs, string(b))
			b = nil
		}
		if b == nil {
			b = header(op)
		}
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	if b != nil {
		msgs = append(msgs, string(b))
	}
	if flush {
		msgs = append(msgs, string(header(opFlush)))
	}
	return msgs
}

// parseInvalidation reads a message's header; keys holds the encoded keys.
func parseInvalidation(p string) (from uint64, op byte, keys string, ok bool) {
	if len(p) < msgHeader || p[0] != msgMagic || (p[1] != opKeys && p[1] != opLoaded && p[1] != opFlush) {
		return 0, 0, "", false
	}
	return binary.BigEndian.Uint64([]byte(p[2:msgHeader])), p[1], p[msgHeader:], true
}

// nextKey splits the first key off keys.
func nextKey(keys string) (key, rest string, ok bool) {
	var n uint64
	var shift uint
	for i := 0; i < len(keys) && i < binary.MaxVarintLen64; i++ {
		b := keys[i]
		n |= uint64(b&0x7f) << shift
		if b < 0x80 {
			start := i + 1
			if n > uint64(len(keys)-start) {
				return "", "", false
			}
			end := start + int(n)
			return keys[start:end], keys[end:], true
		}
		shift += 7
	}
	return "", "", false
}

// publish queues the invalidation of keys on pipe, unless invalidation is
// off, and returns the number of messages. op is opKeys after a Set or
// Delete, opLoaded after a load's fill.
func (c *Cache[V]) publish(ctx context.Context, pipe redis.Pipeliner, op byte, keys ...string) int {
	if c.cfg.NoInvalidation {
		return 0
	}
	msgs := keyMessages(c.id, op, keys)
	for _, m := range msgs {
		// PUBLISH takes no key, so a cluster client would send it to any
		// master (go-redis picks them in turn): a second round trip and
		// socket, on a node that has nothing to do with this cache.
		// Routed by its channel, which carries the cache's hash tag, it
		// goes with the rest of the pipeline to the cache's own master;
		// Redis Cluster forwards it to the subscribers on every node
		// (TestCluster/CachesOnEveryMaster).
		pipe.Publish(ctx, c.channel, m).SetFirstKeyPos(1)
	}
	return len(msgs)
}

// apply acts on one message from the channel.
func (c *Cache[V]) apply(payload string) {
	from, op, keys, ok := parseInvalidation(payload)
	if !ok {
		c.st.badMessages.Add(1)
		c.log.Warn("cache: ignoring a message that is not an invalidation", "channel", c.channel, "bytes", len(payload))
		return
	}
	if from == c.id {
		return // our own: the local tier is already up to date
	}
	c.st.invalReceived.Add(1)
	if op == opFlush {
		c.flushLocal()
		return
	}
	for keys != "" {
		var key string
		if key, keys, ok = nextKey(keys); !ok {
			// Corrupt tail: the keys it held are unknown, so drop them all.
			c.st.badMessages.Add(1)
			c.flushLocal()
			return
		}
		c.dropLocal(key)
		if op == opKeys {
			// Another instance's Set or Delete: as for our own.
			c.flights.Forget(key)
		}
		c.wake(key)
	}
}

func (c *Cache[V]) flushLocal() {
	if c.local != nil {
		c.local.flush()
	}
	c.st.flushes.Add(1)
	c.wakeAll()
}

// Start registers the cache's background work with g: a closer that, when g
// closes, cancels the loads in progress and waits for them, and, unless
// Config.NoInvalidation is set, the invalidation subscriber. The subscriber
// holds one connection of the pool's blocking lane, reserved here: a pool
// whose blocking lane is used up fails Start with pool.ErrOverBudget.
//
// The subscriber connects in the background (Stats.Subscribed says when it
// is listening) and flushes the local tier every time it (re)subscribes,
// since messages sent while it was away are lost. Start may be called once;
// a second call fails with ErrAlreadyStarted (and also matches ErrClosed once g
// has closed). A Start that fails (g closing meanwhile, no room in the
// pool) leaves the cache unstarted and open, and may be tried again.
// Closing g closes the cache: see ErrClosed.
func (c *Cache[V]) Start(g *lifecycle.Group) error {
	if g == nil {
		return fmt.Errorf("%w: cache %q: Start: nil group", ErrInvalid, c.name)
	}
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if c.started {
		if c.loads.isClosed() {
			return fmt.Errorf("%w: cache %q: Start: %w", ErrAlreadyStarted, c.name, ErrClosed)
		}
		return fmt.Errorf("%w: cache %q", ErrAlreadyStarted, c.name)
	}
	var res *pool.Reservation
	if !c.cfg.NoInvalidation {
		var err error
		if res, err = c.p.ReserveBlocking("cache:"+c.name+" invalidation", 1); err != nil {
			return fmt.Errorf("cache %q: Start: %w", c.name, err)
		}
	}
	fail := func(err error) error {
		if res != nil {
			_ = res.Release()
		}
		return fmt.Errorf("cache %q: Start: %w", c.name, err)
	}
	// The group may begin closing between two of these registrations: then
	// Start fails, and the closer registered before must not close the
	// cache, which was never started on g and stays usable. The closer
	// runs after Start returned (it takes startMu) and acts only if this
	// Start succeeded.
	if err := g.OnClose("cache:"+c.name+" loads", func(ctx context.Context) error {
		if !c.startedOn(g) {
			return nil
		}
		return c.loads.close(ctx)
	}); err != nil {
		return fail(err)
	}
	if res != nil {
		name := "cache:" + c.name + " invalidation"
		if err := g.OnClose(name, func(context.Context) error { return res.Release() }); err != nil {
			return fail(err)
		}
		if err := g.Go(name, func(ctx context.Context) error { return c.subscribe(ctx, res) }); err != nil {
			return fail(err)
		}
	}
	c.started, c.group = true, g
	return nil
}

// startedOn reports whether Start succeeded on g.
func (c *Cache[V]) startedOn(g *lifecycle.Group) bool {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	return c.started && c.group == g
}

// Subscriber backoff after consecutive failures: the first retry is at once
// (go-redis has usually redialled already), then 50ms doubling to 1s, each
// with jitter so that instances do not reconnect in step. The cap is how
// late a subscriber may find Redis again after an outage, and until it does
// its local copies may outlive writes other instances make meanwhile (its
// flush on resubscribing ends that). 1s, as the queue's, costs one refused
// dial a second per cache while Redis is down; 5s kept subscribers away for
// up to 5s after Redis was back (TestRedisRestartMidRun_Server).
const (
	retryMin = 50 * time.Millisecond
	retryMax = time.Second
)

func retryDelay(failures int) time.Duration {
	if failures <= 1 {
		return 0
	}
	d := retryMax
	if failures-2 < 8 {
		d = min(retryMin<<(failures-2), retryMax)
	}
	return d/2 + rand.N(d/2+1)
}

// subscribe is the invalidation subscriber: one lifecycle task per cache,
// one reserved connection.
func (c *Cache[V]) subscribe(ctx context.Context, res *pool.Reservation) error {
	var mu sync.Mutex
	var sub *pool.Subscription
	closeSub := func() {
		mu.Lock()
		if sub != nil {
			_ = sub.Close()
			sub = nil
		}
		mu.Unlock()
	}
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
		closeSub()
		_ = res.Release()
	})
	defer func() {
		if !stop() {
			<-released
		}
	}()
	defer closeSub()
	defer c.subscribed.Store(false)

	failures := 0
	pingSent := false
	for ctx.Err() == nil {
		mu.Lock()
		s := sub
		mu.Unlock()
		if s == nil {
			// A peer that takes the connection and never confirms the
			// subscription must not hold the subscriber, and the
			// invalidations it misses meanwhile, for ever: go-redis reads
			// the confirmation with the context's deadline as the socket's.
			sctx, cancel := context.WithTimeout(ctx, c.cfg.PingInterval)
			ns, err := res.Subscribe(sctx, c.channel)
			cancel()
			if err != nil {
				failures++
				c.log.Warn("cache: invalidation subscriber cannot subscribe", "err", err, "failures", failures)
				if !sleep(ctx, retryDelay(failures)) {
					return nil
				}
				continue
			}
			mu.Lock()
			if ctx.Err() != nil { // closeSub already ran
				mu.Unlock()
				_ = ns.Close()
				return nil
			}
			sub, s = ns, ns
			mu.Unlock()
			pingSent = false
			c.subscribedNow()
		}
		msg, err := s.ReceiveTimeout(ctx, c.cfg.PingInterval)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pingSent || s.Ping(ctx) != nil {
					// Unanswered for a whole interval: the connection is
					// dead without having said so. Start over on a new one.
					c.log.Warn("cache: invalidation subscriber's connection does not answer; reconnecting")
					c.subscribed.Store(false)
					closeSub()
					continue
				}
				pingSent = true
				continue
			}
			// go-redis has closed the connection and redials on the next
			// Receive; the confirmation of its new subscription flushes
			// the local tier (below).
			c.subscribed.Store(false)
			failures++
			c.log.Warn("cache: invalidation subscriber lost its connection", "err", err, "failures", failures)
			if !sleep(ctx, retryDelay(failures)) {
				return nil
			}
			continue
		}
		failures, pingSent = 0, false
		switch m := msg.(type) {
		case *redis.Message:
			c.apply(m.Payload)
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				c.subscribedNow()
			}
		}
	}
	return nil
}

// subscribedNow runs whenever the subscription starts or starts again.
// Messages sent while there was none are lost, so everything local goes.
func (c *Cache[V]) subscribedNow() {
	c.flushLocal()
	c.st.subscribes.Add(1)
	c.subscribed.Store(true)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
