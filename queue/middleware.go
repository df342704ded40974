package queue

import (
	"context"
	"errors"
	"fmt"
)

// Middleware on both sides of a queue: Chain wraps handlers, and
// Config.BeforeEnqueue sees every job a producer enqueues.

// Middleware wraps a Handler in another: logging, metrics, tracing,
// recovering domain errors, setting a tenant in ctx. It is called once, by
// Chain, when the handler is built; the Handler it returns is called for
// every run.
//
// A middleware runs on the worker's handler goroutine, inside the same
// recover as the handler: a panic in it, before or after it calls the
// handler it wraps, is a failed attempt (PanicError, WorkerStats.Panics),
// as a handler's is. Its error is the run's error, and decides the job's
// outcome as a handler's does (nil, an error, Permanent).
type Middleware func(Handler) Handler

// Chain returns h wrapped in mws, the first outermost: Chain(h, a, b)
// runs a, which calls b, which calls h; their code after the call runs in
// the reverse order (h, then b, then a). Nil middlewares are skipped.
// Chain panics when a middleware returns a nil Handler, naming its index.
//
// Wrap the Mux to run middleware around every job, or one route's handler
// for that type alone:
//
//	w, err := queue.NewWorker(c, q, queue.Chain(mux.Run, logRuns, countRuns), cfg)
//	mux.Handle("report.build", queue.Chain(buildReport, withTimeoutLog))
func Chain(h Handler, mws ...Middleware) Handler {
	if h == nil {
		panic("queue: Chain: nil handler")
	}
	for i := len(mws) - 1; i >= 0; i-- {
		if mws[i] == nil {
			continue
		}
		if h = mws[i](h); h == nil {
			panic(fmt.Sprintf("queue: Chain: middleware %d returned a nil Handler", i))
		}
	}
	return h
}

// Enqueuing is a job being enqueued, as Config.BeforeEnqueue sees it: its
// queue, type and payload, and the headers its options set, which the hook
// may add to. It is valid during the hook's call only.
type Enqueuing struct {
	Queue   string
	Type    string // the Type option; "" without
	Payload []byte // the caller's bytes: read them, do not change them (an enqueue whose hook assigns the field fails)

	o *enqueueOpts
}

// Header returns the value of the job's header key, as the options (or an
// earlier SetHeader) set it, and whether it is set.
func (e *Enqueuing) Header(key string) (string, bool) {
	for i := len(e.o.headers) - 1; i >= 0; i-- { // the last set wins
		if e.o.headers[i].k == key {
			return e.o.headers[i].v, true
		}
	}
	return "", false
}

// SetHeader sets the job's header key to value, replacing a value the
// options set (call Header first to let the caller's own win). The entry
// follows the rules of the Header option, and the job's headers stay
// within MaxHeaders and MaxHeaderBytes: otherwise SetHeader sets nothing
// and returns an error wrapping ErrInvalidHeader that says why, which the
// hook may return (refusing the job) or ignore (enqueueing it without the
// entry).
func (e *Enqueuing) SetHeader(key, value string) error {
	if err := checkHeader(key, value); err != nil {
		return err
	}
	n, size := 1, len(key)+len(value)
	for i, h := range e.o.headers {
		if h.k == key || lastOf(e.o.headers, i) != i {
			continue // replaced, or set again later
		}
		n, size = n+1, size+len(h.k)+len(h.v)
	}
	if n > MaxHeaders {
		return fmt.Errorf("%w: %q would be entry %d, the limit is %d", ErrInvalidHeader, preview([]byte(key)), n, MaxHeaders)
	}
	if size > MaxHeaderBytes {
		return fmt.Errorf("%w: %q would take the headers to %d bytes, the limit is %d (MaxHeaderBytes)", ErrInvalidHeader, preview([]byte(key)), size, MaxHeaderBytes)
	}
	e.o.headers = append(e.o.headers, header{key, value})
	return nil
}

// lastOf returns the index of the last entry of hs with the key of hs[i].
func lastOf(hs []header, i int) int {
	last := i
	for j := i + 1; j < len(hs); j++ {
		if hs[j].k == hs[i].k {
			last = j
		}
	}
	return last
}

// withHook returns opts with Config.BeforeEnqueue as the last option, for
// the job of payload: it sees what every other option set. Without a hook
// it returns opts.
func (q *Queue) withHook(ctx context.Context, payload []byte, opts []EnqueueOption) []EnqueueOption {
	hook := q.cfg.BeforeEnqueue
	if hook == nil {
		return opts
	}
	return append(opts[:len(opts):len(opts)], func(o *enqueueOpts) error {
		e := Enqueuing{Queue: q.name, Type: o.typ, Payload: payload, o: o}
		if err := hook(ctx, &e); err != nil {
			return fmt.Errorf("queue: Config.BeforeEnqueue refused the job: %w", err)
		}
		if !sameSlice(e.Payload, payload) {
			return errors.New("queue: Config.BeforeEnqueue changed Enqueuing.Payload: a hook cannot replace the payload (the caller's bytes would be enqueued); transform it before Enqueue")
		}
		return nil
	})
}

// sameSlice reports whether a and b are the same slice: length and first
// element (two empty slices are the same).
func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
