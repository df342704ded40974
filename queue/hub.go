package queue

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/hashslot"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// hub is a consumer's fetch hub for one slot group: ONE goroutine holding
// ONE reserved blocking connection, blocked in BZPOPMIN on the doorbells of
// every started worker of the group, whatever their number. On a single
// Redis every queue is in one group; on Redis Cluster a group is one hash
// slot (a BZPOPMIN may only name keys of one slot), so a process consuming
// queues of k slots holds k connections.
//
// When a ring pops, the hub wakes its queue's worker (a buffered-1 channel:
// the hub never waits for a worker), and the worker takes jobs with the
// take script on the pool's background lane. A worker with no free handler
// slot cannot take: its ring is rung again for the other consumers of the
// queue, and its bell is left out of the hub's BZPOPMIN (muted) until the
// worker finds the queue empty again (Worker.watch).
//
// A worker that joins (or is unmuted) while the hub blocks rings the hub's
// own wakeup key, a sorted set in the group's slot that only this hub
// watches, so the hub starts watching it within a round trip; should that
// ring fail, within one BlockTimeout. An idle hub costs one BZPOPMIN per
// BlockTimeout, whatever the number of queues.
type hub struct {
	n      *node
	slot   int // hash slot of the group; 0 on a single Redis
	res    *pool.Reservation
	wakeup string // this hub's wakeup key, in the group's slot
	log    *slog.Logger

	started bool // its task started; guarded by n.hubs.mu

	mu       sync.Mutex
	members  map[string]*Worker // bell key -> worker
	muted    map[string]bool    // bells left out of the BZPOPMIN
	blocked  bool               // a BZPOPMIN is under way
	watching []string           // the keys of the BZPOPMIN under way
	changed  chan struct{}      // a member joined or was unmuted while the hub did not block
}

// hubs is a node's hubs by slot group.
type hubs struct {
	mu sync.Mutex
	m  map[int]*hub
}

// hubFor returns the hub of w's slot group, making it (one reserved
// blocking connection) for the group's first worker; startHub starts its
// task once that worker has joined, dropHub forgets it if the join failed.
func (n *node) hubFor(w *Worker) (*hub, error) {
	slot := 0
	if n.p.IsCluster() {
		slot = keySlot(w.q.k.bell)
	}
	n.hubs.mu.Lock()
	defer n.hubs.mu.Unlock()
	if h, ok := n.hubs.m[slot]; ok {
		return h, nil
	}
	owner := "queue:consumer:" + n.id
	if n.p.IsCluster() {
		owner += ":slot:" + strconv.Itoa(slot)
	}
	res, err := n.p.ReserveBlocking(owner, 1)
	if err != nil {
		return nil, err
	}
	h := &hub{
		n: n, slot: slot, res: res, wakeup: w.q.k.tag + ":hub:" + n.id, log: n.log,
		members: map[string]*Worker{}, muted: map[string]bool{}, changed: make(chan struct{}, 1),
	}
	if n.hubs.m == nil {
		n.hubs.m = map[int]*hub{}
	}
	n.hubs.m[slot] = h
	return h, nil
}

// startHub starts h's task, unless it runs.
func (n *node) startHub(h *hub) error {
	n.hubs.mu.Lock()
	defer n.hubs.mu.Unlock()
	if h.started {
		return nil
	}
	if err := n.g.Go("queue fetch hub ("+n.c.cfg.Namespace+" slot "+strconv.Itoa(h.slot)+")", h.loop); err != nil {
		return err
	}
	h.started = true
	return nil
}

// dropHub forgets h and gives its connection back if its task never
// started (a Start that failed made it).
func (n *node) dropHub(h *hub) {
	n.hubs.mu.Lock()
	defer n.hubs.mu.Unlock()
	if h.started {
		return
	}
	if n.hubs.m[h.slot] == h {
		delete(n.hubs.m, h.slot)
	}
	_ = h.res.Release()
}

// add makes w a member: the hub watches its bell from now on.
func (h *hub) add(ctx context.Context, w *Worker) {
	h.mu.Lock()
	h.members[w.q.k.bell] = w
	delete(h.muted, w.q.k.bell)
	blocked := h.blocked
	h.mu.Unlock()
	h.changedWhile(ctx, blocked)
}

// remove forgets w. A ring the hub delivered to w before is in w's wake
// channel once remove returns (delivery happens under h.mu).
func (h *hub) remove(w *Worker) {
	h.mu.Lock()
	if h.members[w.q.k.bell] == w {
		delete(h.members, w.q.k.bell)
		delete(h.muted, w.q.k.bell)
	}
	h.mu.Unlock()
}

// mute leaves w's bell out of the hub's BZPOPMIN until w waits for a
// ring again (watch). It reports whether it was watched.
func (h *hub) mute(w *Worker) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.members[w.q.k.bell] != w || h.muted[w.q.k.bell] {
		return false
	}
	h.muted[w.q.k.bell] = true
	return true
}

// watch unmutes w, if it was muted: it found its queue empty and waits for
// a ring.
func (h *hub) watch(ctx context.Context, w *Worker) {
	h.mu.Lock()
	if !h.muted[w.q.k.bell] {
		h.mu.Unlock()
		return
	}
	delete(h.muted, w.q.k.bell)
	blocked := h.blocked
	h.mu.Unlock()
	h.changedWhile(ctx, blocked)
}

// changedWhile tells the hub that its set of bells grew: through its
// channel when it does not block, else by ringing its wakeup key. The
// wakeup key expires: a ring that arrives after the BZPOPMIN returned
// stays until the next one pops it, or until it expires.
func (h *hub) changedWhile(ctx context.Context, blocked bool) {
	if !blocked {
		select {
		case h.changed <- struct{}{}:
		default:
		}
		return
	}
	pipe := h.n.p.Background().Pipeline()
	pipe.ZAdd(ctx, h.wakeup, redis.Z{Score: 0, Member: bellMember})
	pipe.PExpire(ctx, h.wakeup, time.Minute)
	if _, err := pipe.Exec(ctx); err != nil {
		// Not lost: the hub watches it after its BZPOPMIN returns, within
		// one BlockTimeout.
		h.log.Warn("queue: waking the fetch hub failed; it picks up the new queue within one BlockTimeout", "err", err)
	}
}

// begin returns the keys and timeout of the next BZPOPMIN, and marks the
// hub blocked, or returns nil when no worker waits for a ring.
func (h *hub) begin() ([]string, time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := h.watching[:0]
	keys = append(keys, h.wakeup)
	timeout := time.Duration(0)
	for bell, w := range h.members {
		if timeout == 0 || w.cfg.BlockTimeout < timeout {
			timeout = w.cfg.BlockTimeout
		}
		if !h.muted[bell] {
			keys = append(keys, bell)
		}
	}
	if len(keys) == 1 {
		h.watching = keys
		return nil, 0
	}
	h.blocked, h.watching = true, keys
	return keys, timeout
}

// end marks the BZPOPMIN returned, and records the return on every member
// (FetcherLastReturn).
func (h *hub) end() {
	now := time.Now().UnixNano()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.blocked = false
	for _, w := range h.members {
		w.st.lastFetch.Store(now)
	}
}

// loop is the hub: BZPOPMIN on the bells, a wake for the worker of the one
// that rang. It stops when the group closes, closing its connection to end
// a BZPOPMIN under way.
func (h *hub) loop(ctx context.Context) error {
	released := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = h.res.Release(); close(released) })
	defer func() {
		if stop() {
			_ = h.res.Release()
		} else {
			<-released
		}
		h.n.hubs.mu.Lock()
		if h.n.hubs.m[h.slot] == h {
			delete(h.n.hubs.m, h.slot)
		}
		h.n.hubs.mu.Unlock()
	}()
	c := h.res.Client()
	var bo troubleBackoff
	for {
		keys, timeout := h.begin()
		if keys == nil {
			select {
			case <-h.changed:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		z, err := c.BZPopMin(ctx, timeout, keys...).Result()
		h.end()
		switch {
		case ctx.Err() != nil:
			// The BZPOPMIN was cut by closing the connection: a ring Redis
			// popped at that moment is lost with the reply. Hand every
			// watched ring on (one pipelined round trip, at close only).
			h.handOn(lifecycle.CloseContext(ctx), keys[1:])
			return nil
		case err == nil:
			bo.reset()
			h.rang(ctx, z.Key)
		case errors.Is(err, redis.Nil):
			bo.reset()
		default:
			h.log.Warn("queue: fetch hub: BZPOPMIN failed; backing off", "err", err)
			h.failed()
			if !bo.wait(ctx) {
				return nil
			}
		}
	}
}

// rang delivers a ring to its worker, or hands it on: the worker left, or
// has no free slot (then it is muted until it waits again).
func (h *hub) rang(ctx context.Context, bell string) {
	if bell == h.wakeup {
		return
	}
	h.mu.Lock()
	w := h.members[bell]
	if w != nil && w.hasRoom() {
		w.wakeFetcher()
		h.mu.Unlock()
		return
	}
	if w != nil {
		h.muted[bell] = true
	}
	h.mu.Unlock()
	// On the background lane, and past the group's closing (by its
	// deadline): closing releases the hub's own connection, and a ring
	// dropped here would leave the queue's jobs waiting.
	rctx := ctx
	if ctx.Err() != nil {
		rctx = lifecycle.CloseContext(ctx)
	}
	if err := ringBell(rctx, h.n.p.Background(), bell); err != nil {
		h.log.Warn("queue: fetch hub: ringing a doorbell again failed", "bell", bell, "err", err)
		if w != nil && ctx.Err() == nil {
			h.mu.Lock()
			delete(h.muted, bell)
			w.wakeFetcher() // it takes once it has room
			h.mu.Unlock()
		}
	}
}

// failed counts a failed BZPOPMIN as a fetch error of every member
// (WorkerStats.FetchErrors) and wakes them all: the reply is lost, not
// necessarily the pop.
func (h *hub) failed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.members {
		w.st.fetchErrors.Add(1)
		w.mem.connectionFailed() // before the wake: the take it causes reads the policy again
		w.wakeFetcher()
	}
}

// handOn rings again the bells of the queues that hold jobs (ringScript).
func (h *hub) handOn(ctx context.Context, bells []string) {
	if len(bells) == 0 {
		return
	}
	ring := func(s *redis.Script) ([]redis.Cmder, error) {
		pipe := h.n.p.Background().Pipeline()
		for _, b := range bells {
			// A bell is "<tag>:bell" (keys.go), its ready list "<tag>:ready",
			// its partitioned jobs "<tag>:pjobs" (parts.go, keys.fair) and its level lists
			// "<tag>:ready:<l>" (levels.go).
			tag := strings.TrimSuffix(b, ":bell")
			s.Eval(ctx, pipe, append([]string{tag + ":ready", b, tag + ":pjobs"}, levelLists(tag+":ready")...))
		}
		return pipe.Exec(ctx)
	}
	cmds, err := ring(ringScript)
	if oomRefused(cmds, err) {
		// At maxmemory, where no producer can ring: the allow-oom twin
		// (ringing again a bell that did ring is harmless).
		_, err = ring(ringAtLimitScript)
	}
	if err != nil {
		h.log.Warn("queue: fetch hub: handing the doorbells on at close failed; other consumers find those jobs at the next ring of their queue, or when this consumer's heartbeat expires", "err", err)
	}
}

// keySlot is the Redis Cluster hash slot of key.
var keySlot = hashslot.Of
