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
// # Running a service
//
// [Group.Run] is a service's main: it blocks until its context ends (a
// signal, with signal.NotifyContext) or a shutdown is requested, then closes
// the group with Config.ShutdownTimeout as the deadline and returns the
// result. A task asks for shutdown with [Group.Shutdown], which never blocks
// (fx's Shutdowner); with Config.StopOnError the first task that fails does
// so itself (oklog/run's model). By default a failing task is reported and
// the others run on. [Group.Wait] returns the result of a Close made
// elsewhere. A task may also call Close with its own context: Close then
// does not wait for the calling task.
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
