package queue

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/backoff"
	"github.com/bounded-go/bounded/pool"
)

// The control channel: ONE subscription per Consumer (process and
// namespace), on one connection of the blocking lane reserved when the
// Consumer's heartbeat is made (ConsumerConfig.Control), and one lifecycle
// task started with the heartbeat. Cancel publishes "<queue> <id> <enqueued
// ms>" on the channel of the consumer holding the job, from the script that
// checked the job is still in its processing list; the subscriber cancels
// the handler's context (cause ErrCancelled), or remembers the cancel for a
// job fetched but not started yet.
//
// Why a connection of its own: no subscription the process already holds
// fits. The heartbeat ticks every HeartbeatInterval (10 s by default),
// far from the 10 ms a cancel should take; the room subscriber (Queue.Start)
// is per queue and producer-side, absent from most consumers; a fetcher's
// connection is blocked in BLMOVE. One subscription per process keeps the
// cost at one connection whatever the number of queues, and one channel per
// consumer sends each process only its own cancels.
//
// Missed messages: a message sent while the subscription is down is lost,
// so every (re)subscription reads the cancel markers (cancelTTL) of the
// jobs the process holds, and acts on those that name the run it holds.

// ctlRecentMax bounds the cancels remembered for jobs not started yet.
const ctlRecentMax = 1024

// controlSub is the control subscription of one run of a Consumer.
type controlSub struct {
	n   *node
	res *pool.Reservation
	ch  string

	subscribed atomic.Bool
	received   atomic.Uint64 // cancel messages received

	mu  sync.Mutex
	sub *pool.Subscription
}

// reserveControl reserves the control connection of a new heartbeat run,
// so that a budget without room for it fails the worker's Start at once.
func (n *node) reserveControl() error {
	res, err := n.p.ReserveBlocking("queue control ("+n.c.cfg.Namespace+")", 1)
	if err != nil {
		return err
	}
	n.ctl = &controlSub{n: n, res: res, ch: controlChannel(n.c.cfg.Namespace, n.id)}
	return nil
}

// releaseControl gives back the control connection of a run whose tasks
// never started (the task releases it otherwise).
func (n *node) releaseControl() {
	n.mu.Lock()
	idle := !n.running
	n.mu.Unlock()
	if n.ctl != nil && idle {
		_ = n.ctl.res.Release()
	}
}

// loop is the control subscriber task: it runs until the group closes.
func (s *controlSub) loop(ctx context.Context) error {
	var bo backoff.Backoff
	bo.Min, bo.Max = 50*time.Millisecond, time.Second
	stop := context.AfterFunc(ctx, s.closeSub)
	defer func() {
		stop()
		s.closeSub()
		_ = s.res.Release()
	}()
	pingSent := false
	for ctx.Err() == nil {
		sub := s.current()
		if sub == nil {
			if sub = s.subscribe(ctx); sub == nil {
				bo.Wait(ctx)
				continue
			}
			pingSent = false
			s.catchUp(ctx)
		}
		msg, err := sub.ReceiveTimeout(ctx, subscriberPing)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pingSent && sub.Ping(ctx) == nil {
				pingSent = true
				continue
			}
			s.n.log.Warn("queue: control subscriber lost its connection", "err", err)
			s.drop()
			bo.Wait(ctx)
			continue
		}
		bo.Reset()
		pingSent = false
		if m, ok := msg.(*redis.Message); ok {
			s.received.Add(1)
			s.deliver(m.Payload)
		}
	}
	return nil
}

// subscribe subscribes to the consumer's channel; nil when it failed or
// ctx ended.
func (s *controlSub) subscribe(ctx context.Context) *pool.Subscription {
	sctx, cancel := context.WithTimeout(ctx, subscriberPing)
	sub, err := s.res.Subscribe(sctx, s.ch)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			s.n.log.Warn("queue: control subscriber cannot subscribe", "err", err)
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		_ = sub.Close()
		return nil
	}
	s.sub = sub
	s.subscribed.Store(true)
	return sub
}

func (s *controlSub) current() *pool.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sub
}

// drop closes the subscription: the loop subscribes again.
func (s *controlSub) drop() { s.closeSub() }

func (s *controlSub) closeSub() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscribed.Store(false)
	if s.sub != nil {
		_ = s.sub.Close()
		s.sub = nil
	}
}

// deliver acts on one message: "<queue> <id> <enqueued ms>".
func (s *controlSub) deliver(msg string) {
	queue, rest, ok1 := strings.Cut(msg, " ")
	id, enq, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		s.n.log.Warn("queue: malformed control message ignored", "message", preview([]byte(msg)))
		return
	}
	for _, m := range s.n.attached() {
		if w, ok := m.(*Worker); ok && w.q.name == queue {
			w.ctl.cancel(runKey(id, enq), w.q.cfg.Now())
		}
	}
}

// catchUp reads the cancel markers of every job the process holds (one
// pipeline) and acts on those that name the run it holds: cancels sent
// while the subscription was down.
func (s *controlSub) catchUp(ctx context.Context) {
	type held struct {
		w   *Worker
		key string
		mv  string
		cmd *redis.SliceCmd
	}
	var hs []held
	pipe := s.n.p.Background().Pipeline()
	for _, m := range s.n.attached() {
		w, ok := m.(*Worker)
		if !ok {
			continue
		}
		w.mu.Lock()
		for elem := range w.inflight {
			if e, err := decodeEnvelope([]byte(elem)); err == nil {
				mv := markerValue(e)
				hs = append(hs, held{w: w, key: runKey(e.id, mv), mv: mv, cmd: pipe.MGet(ctx, w.q.k.runCancel(e.id, mv), w.q.k.cancelMarker(e.id))})
			}
		}
		w.mu.Unlock()
	}
	if len(hs) == 0 {
		return
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		s.n.log.Warn("queue: control subscriber could not read the cancels it may have missed", "err", err)
	}
	for _, h := range hs {
		if vs, err := h.cmd.Result(); err == nil && cancelNamesRun(vs, h.mv) {
			h.w.ctl.cancel(h.key, h.w.q.cfg.Now())
		}
	}
}

// runKey names one run of a job: "<id> <enqueued ms>".
func runKey(id, enq string) string { return id + " " + enq }

// workerCtl is a worker's share of job control: its running jobs, by
// runKey, and the cancels received for jobs it has not started yet.
type workerCtl struct {
	mu        sync.Mutex
	running   map[string]*jobRun
	recent    map[string]time.Time // runKey -> when the cancel came
	order     []string             // recent's keys, oldest first
	cancelled atomic.Uint64        // runs ended by a cancel
}

// cancel cancels the run named key, or remembers the cancel until the run
// starts (at most ctlRecentMax of them, for cancelTTL).
func (c *workerCtl) cancel(key string, now time.Time) {
	c.mu.Lock()
	jr := c.running[key]
	if jr == nil {
		if c.recent == nil {
			c.recent = map[string]time.Time{}
		}
		if _, ok := c.recent[key]; !ok {
			if len(c.order) >= ctlRecentMax {
				delete(c.recent, c.order[0])
				c.order = c.order[1:]
			}
			c.order = append(c.order, key)
		}
		c.recent[key] = now
	}
	c.mu.Unlock()
	if jr != nil {
		jr.cancel(ErrCancelled)
	}
}

// begin registers a run; it reports whether a cancel for it came before it
// started.
func (c *workerCtl) begin(jr *jobRun, now time.Time) (cancelled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running == nil {
		c.running = map[string]*jobRun{}
	}
	c.running[jr.key] = jr
	if at, ok := c.recent[jr.key]; ok {
		delete(c.recent, jr.key)
		for i, k := range c.order {
			if k == jr.key {
				c.order = append(c.order[:i], c.order[i+1:]...)
				break
			}
		}
		return now.Sub(at) < cancelTTL
	}
	return false
}

// end unregisters a run.
func (c *workerCtl) end(jr *jobRun) {
	c.mu.Lock()
	if c.running[jr.key] == jr {
		delete(c.running, jr.key)
	}
	c.mu.Unlock()
}
