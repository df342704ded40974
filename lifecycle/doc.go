// Package lifecycle owns every background task of a service: goroutines,
// tickers and the closers of the clients they use.
//
// The service this library was written after ran more than fifty timers that
// nothing owned and nothing stopped. Here nothing runs unowned: a component
// never starts a goroutine or a ticker by itself, it registers it with a
// [Group] it was given. Closing the group cancels every task, waits until each
// has returned (or the caller's deadline passes), and then runs the registered
// closers in reverse order of registration.
//
// A Group is to long-lived background work what errgroup is to a fan-out:
//
//	g := lifecycle.New()
//	_ = g.Go("fetcher", func(ctx context.Context) error { ... })       // runs until Close
//	_ = g.Every("heartbeat", time.Second, func(ctx context.Context) {}) // one ticker, never overlapping
//	_ = g.OnClose("redis", func(ctx context.Context) error { return client.Close() })
//	...
//	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//	defer cancel()
//	err := g.Close(ctx) // every task returned, every closer ran, or an error naming the stragglers
//
// # Shutdown with a deadline
//
// A task's context is cancelled as soon as Close begins. A task that wants to
// finish in-flight work before it returns (a queue worker draining its
// handlers) can learn how long it has with [CloseContext], which returns the
// context given to Close: its deadline is the deadline of the whole shutdown.
//
// # Panics
//
// A panic in a task is not recovered. Like errgroup, lifecycle takes the view
// that a panic is a bug that must crash the process where it happened rather
// than be turned into an error far from its cause; components that run user
// code (queue handlers) recover those panics themselves, where they can
// attribute them.
package lifecycle
