// Package lifecycle owns every background task of a service: goroutines,
// tickers and the closers of the clients they use.
//
//	g := lifecycle.New()
//	_ = g.Go("fetcher", func(ctx context.Context) error { ... })       // runs until Close
//	_ = g.Every("heartbeat", time.Second, func(ctx context.Context) {}) // one ticker, never overlapping
//	_ = g.OnClose("redis", func(ctx context.Context) error { return client.Close() })
//	...
//	err := g.Close(ctx) // every task returned, every closer ran, or an error naming the stragglers
//
// # Model
//
// A component never starts a goroutine or a ticker by itself: it registers
// it with a [Group] it was given, which is to long-lived background work
// what errgroup is to a fan-out. Closing the group cancels every task's
// context, waits until each has returned or the caller's deadline passes,
// then runs the closers in reverse order of registration. [Group.Run] is a
// service's main: it blocks until its context ends or a shutdown is
// requested ([Group.Shutdown], which never blocks, or a failing task under
// Config.StopOnError), then closes the group with Config.ShutdownTimeout as
// the deadline. A task that finishes in-flight work after its context is
// cancelled learns that deadline from [CloseContext]. A panic in a task is
// not recovered: like errgroup, lifecycle takes it for a bug that must crash
// the process where it happened; components that run user code recover
// those panics themselves, where they can attribute them.
//
// # Zero value, concurrency, closing
//
// The zero Group is usable, with a zero Config. A Group is safe for
// concurrent use. Whoever creates a Group closes it, with Close or with Run,
// which closes it. Close is idempotent: later calls return the first one's
// result, and [Group.Wait] gives it to anyone else. A task may close its own
// group by passing its context (or one derived from it) to Close, which then
// does not wait for that task; a task that only wants the group stopped
// calls Shutdown.
//
// # Errors
//
// Registering on a group that has begun closing fails with [ErrClosed] and
// starts nothing. An empty task name, a nil function or a non-positive
// interval is refused with a plain error: they are arguments of one call,
// not configuration. Close returns errors.Join of the cause given to
// Shutdown, the errors tasks returned, a [*StuckError] naming the tasks
// still running at its deadline (matching ctx's error, usually
// context.DeadlineExceeded), and the closers' errors. Run returns an error
// wrapping [ErrInvalidConfig] for a negative Config.ShutdownTimeout.
//
// The reasoning and the tests behind each part are in docs/lifecycle.md.
package lifecycle
