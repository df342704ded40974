package queue

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
)

// ErrUnknownType is wrapped by the error a Mux returns for a job whose
// type has no handler (and for a job without a type) when it has no
// fallback. The error is Permanent: the job goes to the dead letters, with
// its type in the reason, and can be requeued once a handler exists.
var ErrUnknownType = errors.New("queue: no handler for the job's type")

// Mux routes jobs to handlers by their type (the Type option, Job.Type).
// Its Run method is the Handler to give NewWorker:
//
//	mux := new(queue.Mux)
//	mux.Handle("email.send", sendEmail)
//	mux.Handle("invoice.render", queue.HandleJSON(renderInvoice))
//	w, err := queue.NewWorker(c, q, mux.Run, queue.WorkerConfig{})
//
// A job whose type has no handler, or that has no type, goes to the
// fallback handler if one is set (Fallback); without one it fails with
// Permanent(err), err wrapping ErrUnknownType and naming the type and the
// job: it goes to the dead letters at once, not retried.
//
// The zero value is an empty Mux, ready to use. A Mux is safe for
// concurrent use: handlers may be added while workers run it (each Run
// reads the routes with one atomic load; a Handle copies them). It holds
// no resources.
type Mux struct {
	mu       sync.Mutex                         // serializes Handle and Fallback
	routes   atomic.Pointer[map[string]Handler] // copied on write
	fallback atomic.Pointer[Handler]
}

// Handle routes jobs of type typ to h. typ follows the rules of the Type
// option. Handle panics when typ is invalid, h is nil, or typ has a
// handler already: these are mistakes in the program's wiring, found when
// it starts (as net/http's ServeMux does).
func (m *Mux) Handle(typ string, h Handler) {
	if err := checkType(typ); err != nil {
		panic(fmt.Sprintf("queue: Mux.Handle: %v", err))
	}
	if h == nil {
		panic(fmt.Sprintf("queue: Mux.Handle(%q): nil handler", typ))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var next map[string]Handler
	if cur := m.routes.Load(); cur != nil {
		if _, dup := (*cur)[typ]; dup {
			panic(fmt.Sprintf("queue: Mux.Handle(%q): the type has a handler already", typ))
		}
		next = maps.Clone(*cur)
	} else {
		next = make(map[string]Handler, 1)
	}
	next[typ] = h
	m.routes.Store(&next)
}

// Fallback sets the handler of the jobs whose type has no handler, and of
// jobs without a type (enqueued before the producer set types, or by
// another program). Fallback(nil) removes it: such jobs fail with
// ErrUnknownType again.
func (m *Mux) Fallback(h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h == nil {
		m.fallback.Store(nil)
		return
	}
	m.fallback.Store(&h)
}

// Run runs job with the handler of its type: the Handler of a worker.
func (m *Mux) Run(ctx context.Context, job *Job) error {
	if routes := m.routes.Load(); routes != nil {
		if h, ok := (*routes)[job.Type]; ok {
			return h(ctx, job)
		}
	}
	if fb := m.fallback.Load(); fb != nil {
		return (*fb)(ctx, job)
	}
	if job.Type == "" {
		return Permanent(fmt.Errorf("%w: job %s has no type, and the Mux has no fallback", ErrUnknownType, job.ID))
	}
	return Permanent(fmt.Errorf("%w %q: job %s (the Mux has no handler for the type and no fallback)", ErrUnknownType, job.Type, job.ID))
}
