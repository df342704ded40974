package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/bounded-go/bounded/internal/check"
)

// Shared handler slots and priorities across queues (Slots,
// WorkerConfig.Priority and Weight; docs/queue.md, "Priorities across
// queues").
//
// Without shared slots every worker runs up to its own Concurrency jobs,
// and a high-priority queue never competes with a low one. With them, a
// worker's fetcher needs two things before it takes a job: one of its own
// handler slots (Worker.slots, Concurrency of them, as before) and a grant
// of one of the shared slots from the arbiter below. The arbiter has no
// goroutine: it is a mutex, a count of free slots and, per worker, a count
// of grants and a buffered-1 channel that signals one.
//
// A worker asks from the moment its fetcher wants a job (it was rung, or
// its last take filled every slot it held) until a take finds fewer jobs
// than slots (the queue is empty, paused, or may not run more now): then
// it gives back what it was granted and stops asking, and only a ring of
// its doorbell makes it ask again. So a slot is never granted to a worker
// that is not about to take: one that waits for a ring, backs off, or
// sleeps on a timer (Redis at maxmemory, a rate limit) does not ask.
//
// A freed slot goes to an asking worker at once (so no slot stays free
// while a worker that can use it asks): to the one of highest Priority;
// among those of equal Priority, by smooth weighted round robin on Weight
// (the nginx upstream algorithm), so over any run of grants each gets its
// share within one grant and none starves. A grant made while its
// worker's fetcher is between two takes is kept for it (granted) rather
// than lost to a worker that happened to be waiting: otherwise a fast
// queue would lose its share to every round trip. A worker is granted at
// most Concurrency slots, counting those it holds, so a grant is never
// stranded behind a full worker.

// Bounds of NewSlots's size and of WorkerConfig.Weight and Priority.
const (
	MaxSlots    = 10_000
	MaxWeight   = 1000
	MaxPriority = 1000
)

// Slots are handler slots shared by the workers given them in
// WorkerConfig.Slots, of any queues (and consumers) of the process: at
// most Size of their jobs run at once, and a freed slot goes to a worker
// whose queue has jobs, by WorkerConfig.Priority, then Weight. Make them
// with NewSlots; the zero value is not usable. Slots hold no resources
// and need no closing; they are safe for concurrent use.
type Slots struct {
	mu     sync.Mutex
	size   int
	free   int     // slots neither held nor granted
	asking []*lane // the workers asking, in the order they began
}

// NewSlots returns size shared handler slots. A size outside
// 1..MaxSlots fails with an error wrapping ErrInvalidConfig.
func NewSlots(size int) (*Slots, error) {
	if size < 1 || size > MaxSlots {
		return nil, fmt.Errorf("%w: NewSlots: size must be in 1..%d, got %d", ErrInvalidConfig, MaxSlots, size)
	}
	return &Slots{size: size, free: size}, nil
}

// Size returns the number of slots.
func (l *Slots) Size() int { return l.size }

// lane is one worker's account with its shared Slots. Its fields are
// guarded by l.mu.
type lane struct {
	l        *Slots
	priority int
	weight   int
	max      int // the worker's Concurrency
	grantCh  chan struct{}

	asking  bool
	held    int // slots held for jobs taken
	granted int // slots granted and not yet used by a take
	current int // smooth weighted round robin
}

func (l *Slots) join(cfg WorkerConfig) *lane {
	return &lane{l: l, priority: cfg.Priority, weight: cfg.Weight, max: cfg.Concurrency, grantCh: make(chan struct{}, 1)}
}

// room reports whether m can use one more slot.
func (m *lane) room() bool { return m.held+m.granted < m.max }

// pick chooses the asking worker that gets a freed slot, or nil when none
// can use it. l.mu is held.
func (l *Slots) pick() *lane {
	top, found := 0, false
	for _, m := range l.asking {
		if m.room() && (!found || m.priority > top) {
			top, found = m.priority, true
		}
	}
	if !found {
		return nil
	}
	var best *lane
	total := 0
	for _, m := range l.asking {
		if !m.room() || m.priority != top {
			continue
		}
		m.current += m.weight
		total += m.weight
		if best == nil || m.current > best.current {
			best = m
		}
	}
	best.current -= total
	return best
}

// give hands n freed slots to asking workers, or back to the free ones.
// l.mu is held.
func (l *Slots) give(n int) {
	for ; n > 0; n-- {
		m := l.pick()
		if m == nil {
			l.free += n
			return
		}
		m.granted++
		select {
		case m.grantCh <- struct{}{}:
		default:
		}
	}
}

// regive hands the free slots out by the rule of give once two asking
// workers could use them. Slots are free beside an asking worker with
// room only when it found them free alone (it took one, and takes the
// rest for its batch): once another could use them too (it begins to ask,
// or a slot it held is freed), they would go first come, ahead of a
// higher Priority or beyond a Weight. l.mu is held.
func (l *Slots) regive() {
	if l.free == 0 {
		return
	}
	withRoom := 0
	for _, a := range l.asking {
		if a.room() {
			if withRoom++; withRoom == 2 {
				n := l.free
				l.free = 0
				l.give(n)
				return
			}
		}
	}
}

// acquire makes m ask, and waits for a slot: one granted to it, or a free
// one. Before it first waits it calls waiting (if not nil), outside the
// lock. It reports false when ctx ended first (m keeps asking: stop ends
// that).
func (m *lane) acquire(ctx context.Context, waiting func()) bool {
	l := m.l
	l.mu.Lock()
	if !m.asking {
		m.asking = true
		l.asking = append(l.asking, m)
		l.regive()
	}
	for {
		switch {
		case m.granted > 0:
			m.granted--
		case l.free > 0:
			l.free--
		default:
			l.mu.Unlock()
			if waiting != nil {
				waiting()
				waiting = nil
			}
			select {
			case <-m.grantCh:
			case <-ctx.Done():
				return false
			}
			l.mu.Lock()
			continue
		}
		m.held++
		l.mu.Unlock()
		return true
	}
}

// more takes up to n more slots for a batch, granted or free, without
// waiting, and returns how many.
func (m *lane) more(n int) int {
	l := m.l
	l.mu.Lock()
	defer l.mu.Unlock()
	k := min(n, m.granted)
	m.granted -= k
	j := min(n-k, l.free)
	l.free -= j
	m.held += k + j
	return k + j
}

// release gives back n slots m held.
func (m *lane) release(n int) {
	l := m.l
	l.mu.Lock()
	m.held -= n
	l.give(n)
	l.regive()
	l.mu.Unlock()
}

// stop ends m's asking and gives back what it was granted.
func (m *lane) stop() {
	l := m.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if m.asking {
		m.asking = false
		for i, a := range l.asking {
			if a == m {
				l.asking = append(l.asking[:i], l.asking[i+1:]...)
				break
			}
		}
	}
	g := m.granted
	m.granted = 0
	l.give(g)
	l.regive()
}

// usable returns how many shared slots m holds or is granted: as many
// handlers as its worker can keep busy now (handlers.go).
func (m *lane) usable() int {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	return m.held + m.granted
}

// isAsking reports whether m asks.
func (m *lane) isAsking() bool {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	return m.asking
}

// SlotStats describes shared handler slots.
type SlotStats struct {
	Size   int `json:"size"`
	Free   int `json:"free"`   // neither running a job nor granted to a worker
	Asking int `json:"asking"` // workers that want a slot
}

// Stats returns the state of the slots.
func (l *Slots) Stats() SlotStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return SlotStats{Size: l.size, Free: l.free, Asking: len(l.asking)}
}

// withSlots fills and checks c (withDefaults) and its shared slots: with
// Slots, Concurrency defaults to their size and may not exceed it, and
// Weight defaults to 1; without them Priority and Weight are refused.
func (c WorkerConfig) withSlots(queueLogger *slog.Logger) (WorkerConfig, error) {
	e := check.New(ErrInvalidConfig)
	if c.Slots == nil {
		if c.Priority != 0 || c.Weight != 0 {
			e.Addf("WorkerConfig.Priority (%d) and Weight (%d) order the workers that share handler slots: set WorkerConfig.Slots (NewSlots)", c.Priority, c.Weight)
		}
	} else if c.Slots.size == 0 {
		e.Addf("WorkerConfig.Slots are not usable: make them with NewSlots (the zero Slots have no slot, and the worker would never run a job)")
	} else {
		if c.Concurrency == 0 {
			c.Concurrency = c.Slots.size
		}
		if c.Concurrency > c.Slots.size {
			e.Addf("WorkerConfig.Concurrency (%d) must not exceed the size of its shared WorkerConfig.Slots (%d): it bounds the worker's share of them", c.Concurrency, c.Slots.size)
		}
		check.Default(e, &c.Weight, 1, "WorkerConfig.Weight")
		if c.Weight > MaxWeight {
			e.Addf("WorkerConfig.Weight must be in 1..%d, got %d", MaxWeight, c.Weight)
		}
		if c.Priority < 0 || c.Priority > MaxPriority {
			e.Addf("WorkerConfig.Priority must be in 0..%d, got %d", MaxPriority, c.Priority)
		}
	}
	c, err := c.withDefaults(queueLogger)
	return c, errors.Join(e.Err(), err)
}

// The worker's side: every handler slot of a worker with shared slots is
// backed by one of the consumer's (see fetchLoop, takeBatch, settle).

// grantSlot waits, after the fetcher held one of the worker's own slots,
// for a shared slot to back it. When ctx ends first it frees the worker's
// slot and reports false.
func (f *fetcher) grantSlot() bool {
	if f.w.lane == nil {
		return true
	}
	if f.w.lane.acquire(f.ctx, func() {
		// Starved: its own slot is free, and the shared ones are held by
		// other workers (or granted by Priority and Weight): a state of
		// its own, apart from "waiting for a free slot" (all its own
		// busy).
		f.w.st.fetchState.Store(fetcherWaitingForShared)
		f.w.trimHandlers() // handlers.go: its idle handlers beyond its share go
		f.w.handOnStarved(f.ctx)
	}) {
		return true
	}
	<-f.w.slots
	return false
}

// sharedBatch trims a batch of held worker slots to the shared slots it
// can back now (the first is backed already), freeing the rest.
func (w *Worker) sharedBatch(held int) int {
	if w.lane == nil || held <= 1 {
		return held
	}
	got := w.lane.more(held - 1)
	for range held - 1 - got {
		<-w.slots
	}
	return 1 + got
}

// settleShared follows a take of taken jobs for held slots: a take that
// came short stops asking, and the unused shared slots go back.
func (w *Worker) settleShared(held, taken int) {
	if w.lane == nil {
		return
	}
	if taken < held {
		w.lane.stop()
		w.lane.release(held - taken)
		w.trimHandlers() // handlers.go: its idle handlers beyond its share go
	}
}

// asksForSharedSlot reports whether the worker asks for a shared slot: it
// will take once granted one, whether rung or not. The hub then hands a
// ring of its queue on to the other consumers, as for a worker without a
// free slot: a worker starved by a higher Priority must not sit on a ring
// that an idle consumer of the queue in another process could act on.
func (w *Worker) asksForSharedSlot() bool { return w.lane != nil && w.lane.isAsking() }

// handOnStarved runs when the worker has to wait for a shared slot: from
// now on it asks, so its hub hands the rings of its queue on (hasRoom),
// but the ring that woke it, or the jobs its last full take left, were
// announced already. So its bell is left out of the hub's BZPOPMIN and
// rung again if the queue holds jobs, for the other consumers of the
// queue: a worker starved here must not sit on jobs an idle process could
// run. A bell muted already (the worker asked before, and a ring was
// handed on since) is not rung again: a saturated worker costs nothing.
// (Stopping, it leaves that to handOnRing.)
func (w *Worker) handOnStarved(ctx context.Context) {
	if ctx.Err() != nil || !w.hub.mute(w) {
		return
	}
	if err := ringIfReady(ctx, w.q.p.Background(), w.q.k); err != nil && ctx.Err() == nil {
		w.log.Warn("queue: handing a doorbell ring on failed; other consumers take those jobs at the next ring of the queue", "err", err)
		w.hub.watch(ctx, w) // the hub hands the next ring on
	}
}

// leaveLanes stops the fetcher's asking when it stops.
func (w *Worker) leaveLanes() {
	if w.lane != nil {
		w.lane.stop()
	}
}

// freeSlot frees a handler slot of a job: the worker's, and the shared one
// behind it.
func (w *Worker) freeSlot() {
	<-w.slots
	if w.lane != nil {
		w.lane.release(1)
	}
}

// dropUnstarted frees the slots of the fetched jobs no handler took before
// the worker began to drain (the fetcher has stopped: none come after).
// The jobs stay in the processing list and go back to the ready list; the
// shared slots behind them must go back to their Slots, which outlive the
// worker and serve others.
func (w *Worker) dropUnstarted() {
	for {
		select {
		case <-w.jobs:
			w.freeSlot()
		default:
			return
		}
	}
}
