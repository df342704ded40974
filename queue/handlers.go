package queue

import (
	"context"
	"sync"

	"github.com/bounded-go/bounded/lifecycle"
)

// handlerPool runs the handler goroutines of a worker with shared slots
// (WorkerConfig.Slots): started on demand, and only as many as the worker
// can use. A worker without shared slots runs Concurrency handlers from
// Start, each of which its own slots can keep busy; one sharing Slots of
// size S with others could keep Concurrency (up to S) busy only when it
// holds them all, so N such workers would run N×S handlers for S slots.
//
// A job handed over starts a handler unless an idle one will take it
// (unclaimed > idle), so a job never waits for a goroutine; a handler whose
// job ended stays for the next one while its worker holds or is granted as
// many shared slots as it has handlers, and exits otherwise (idle ones
// beyond the jobs on their way only). Idle handlers are asked to check
// again (trimHandlers) when the worker's share shrinks for good: its take
// came short (it stops asking), or it waits for a shared slot (starved).
// So, whenever the worker waits, its handlers do not exceed the shared
// slots it holds or is granted, and the handlers of all the workers
// sharing Slots do not exceed their size. Handlers are tasks of the
// worker's lifecycle group, as the fixed ones are.
type handlerPool struct {
	g    *lifecycle.Group
	name string        // the handlers' task name
	quit chan struct{} // asks idle handlers to check whether they are needed (buffered: Concurrency)

	mu        sync.Mutex
	running   int  // handler goroutines
	idle      int  // of those, not running a job
	unclaimed int  // jobs handed over and not yet received by a handler
	stopped   bool // the worker drains: no handler starts, the last one out finishes
	finished  bool
}

// handOver hands a fetched job to a handler: one of the fixed handlers
// without shared slots, else an idle one of the pool or a new one.
func (w *Worker) handOver(d delivery) {
	hp := w.handlers
	if hp == nil {
		w.jobs <- d
		return
	}
	hp.mu.Lock()
	hp.unclaimed++
	start := !hp.stopped && hp.unclaimed > hp.idle
	if start {
		hp.running++
		hp.idle++
	}
	hp.mu.Unlock()
	w.jobs <- d // room for every slot: never blocks
	if start {
		if err := hp.g.Go(hp.name, w.poolHandler); err != nil {
			// The group is closing, and so is the worker: the job stays
			// in the channel, and the drain frees its slot and puts it
			// back (handlersStopped).
			hp.mu.Lock()
			hp.running--
			hp.idle--
			last := hp.lastOut()
			hp.mu.Unlock()
			if last {
				w.handlersFinished()
			}
		}
	}
}

// lastOut reports whether the pool is drained and this is the moment to
// finish it (once). hp.mu is held.
func (hp *handlerPool) lastOut() bool {
	if hp.stopped && hp.running == 0 && !hp.finished {
		hp.finished = true
		return true
	}
	return false
}

// poolHandler is one handler goroutine of a pool.
func (w *Worker) poolHandler(ctx context.Context) error {
	hp := w.handlers
	for {
		select {
		case <-w.stopping:
			// Draining: start nothing new (as handleLoop).
			return w.poolHandlerExit()
		default:
		}
		select {
		case d := <-w.jobs:
			hp.mu.Lock()
			hp.unclaimed--
			hp.idle--
			hp.mu.Unlock()
			w.run(d)
			if w.poolHandlerDone() {
				return nil
			}
		case <-hp.quit:
			if w.poolHandlerSurplus() {
				return nil
			}
		case <-w.stopping:
			return w.poolHandlerExit()
		}
	}
}

// poolHandlerSurplus ends an idle handler that its worker cannot use now:
// more idle handlers than jobs on their way, and more handlers than shared
// slots held or granted. It reports whether the handler exits.
func (w *Worker) poolHandlerSurplus() bool {
	hp := w.handlers
	usable := w.lane.usable()
	hp.mu.Lock()
	defer hp.mu.Unlock()
	if hp.idle > hp.unclaimed && hp.running > usable && !hp.stopped {
		hp.idle--
		hp.running--
		return true
	}
	return false
}

// trimHandlers asks the worker's idle handlers to exit if they are not
// needed: its share of the slots shrank (slots.go). It never blocks.
func (w *Worker) trimHandlers() {
	hp := w.handlers
	if hp == nil {
		return
	}
	hp.mu.Lock()
	n := hp.idle - hp.unclaimed
	hp.mu.Unlock()
	for range n {
		select {
		case hp.quit <- struct{}{}:
		default:
			return
		}
	}
}

// poolHandlerDone follows a handler's job: it stays idle for the next job
// while the worker can use it, and otherwise exits (reporting true).
//
// It counts itself idle BEFORE it reads the worker's share: a share that
// shrinks after the read (the fetcher's take came short and gave back its
// grants: settleShared) then asks it to check again (trimHandlers counts
// it idle), and one that shrank before the read is read. Read first, the
// share could shrink between the read and the count, the trim not count
// this handler, and the handler stay idle for good beyond its share.
//
// And when it exits, the idle handlers left beyond the share are asked to
// check again: one may have stayed only because a job was on its way
// (idle <= unclaimed), which another handler took since, and no trim
// comes once the fetcher waits for a ring.
func (w *Worker) poolHandlerDone() bool {
	hp := w.handlers
	hp.mu.Lock()
	hp.idle++
	hp.mu.Unlock()
	usable := w.lane.usable() // slots.go; lane before pool lock, never the other way
	hp.mu.Lock()
	if hp.idle <= hp.unclaimed || hp.running <= usable || hp.stopped {
		hp.mu.Unlock()
		return false
	}
	hp.idle--
	hp.running--
	surplus := min(hp.idle-hp.unclaimed, hp.running-usable)
	hp.mu.Unlock()
	for range surplus {
		select {
		case hp.quit <- struct{}{}:
		default:
			return true
		}
	}
	return true
}

// poolHandlerExit ends a handler of a draining worker.
func (w *Worker) poolHandlerExit() error {
	hp := w.handlers
	hp.mu.Lock()
	hp.idle--
	hp.running--
	last := hp.lastOut()
	hp.mu.Unlock()
	if last {
		w.handlersFinished()
	}
	return nil
}

// handlersStopped runs once the worker's stopping is closed: a pool with
// no handler left finishes at once, otherwise its last handler does.
func (w *Worker) handlersStopped() {
	hp := w.handlers
	if hp == nil {
		return
	}
	hp.mu.Lock()
	hp.stopped = true
	last := hp.lastOut()
	hp.mu.Unlock()
	if last {
		w.handlersFinished()
	}
}

// handlersFinished ends a drained pool, as the last fixed handler does: the
// jobs no handler took free their slots, and the acker learns that every
// handler returned.
func (w *Worker) handlersFinished() {
	w.dropUnstarted()
	close(w.handlersDone)
}

// handlerCount returns how many handler goroutines the worker runs now.
func (w *Worker) handlerCount() int {
	if w.handlers == nil {
		return int(w.handlersLeft.Load())
	}
	w.handlers.mu.Lock()
	defer w.handlers.mu.Unlock()
	return w.handlers.running
}
