package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bounded-go/bounded/internal/check"
)

var (
	// ErrClosed is returned when a task or closer is registered on a group
	// that has begun closing. Nothing is started in that case.
	ErrClosed = errors.New("lifecycle: group is closed")
	// ErrInvalidConfig is wrapped by the error Run returns for a Config that
	// cannot work; the message names the field.
	ErrInvalidConfig = errors.New("lifecycle: invalid config")
)

// Kind says how a task runs.
type Kind string

// The kinds of task a Group owns.
const (
	KindGo      Kind = "go"      // a goroutine registered with Go
	KindEvery   Kind = "every"   // a ticker goroutine registered with Every
	KindOnClose Kind = "onclose" // a closer registered with OnClose, run by Close
)

// Task describes one thing a Group owns. It is a snapshot; it does not change.
type Task struct {
	Name     string
	Kind     Kind
	Since    time.Time     // when it was registered
	Interval time.Duration // for KindEvery only
}

func (t Task) String() string {
	if t.Kind == KindEvery {
		return fmt.Sprintf("%s (%s %s)", t.Name, t.Kind, t.Interval) // "beat (every 1s)"
	}
	return fmt.Sprintf("%s (%s)", t.Name, t.Kind)
}

// Config configures a Group. The zero value is useful: errors are only
// returned by Close, nothing is logged, and the wall clock is used.
type Config struct {
	// Logger receives a record for each task that fails and for each step of
	// Close. Nil discards.
	Logger *slog.Logger
	// OnError, if set, is called when a task returns an error other than the
	// cancellation Close caused, or when a closer fails. It is called from the
	// task's goroutine (or from Close for closers), never under a lock; it
	// must not block for long.
	OnError func(task string, err error)
	// Now returns the current time for Task.Since. Nil means time.Now.
	Now func() time.Time
	// StopOnError makes the first task that fails (returns an error other
	// than the cancellation Close caused) ask for shutdown, as if it had
	// called Shutdown: Run then closes the group, and the error is in the
	// result. Like oklog/run, for services in which every task is essential.
	// False (the default) reports the failure and lets the others run on.
	StopOnError bool
	// ShutdownTimeout is how long Run gives Close once it begins to stop the
	// group: the deadline tasks see through CloseContext. Zero means
	// DefaultShutdownTimeout. Run rejects a negative value with an error
	// wrapping ErrInvalidConfig.
	ShutdownTimeout time.Duration
}

// withDefaults returns c with its zero fields filled in, or an error naming
// every field that cannot work. The fields that can be filled are filled
// even then: a Group has no constructor that could fail, so only Run, the
// one user of ShutdownTimeout, reports the error.
func (c Config) withDefaults() (Config, error) {
	e := check.New(ErrInvalidConfig)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	check.Default(e, &c.ShutdownTimeout, DefaultShutdownTimeout, "Config.ShutdownTimeout")
	return c, e.Err()
}

// Group owns background tasks and the closers of resources they use.
//
// The zero value is a usable Group with a zero Config. A Group is safe for
// concurrent use. Whoever creates a Group must Close it (or Run it, which
// closes it); after Close every registration fails with ErrClosed. Its
// tasks stop it with Shutdown, never by waiting in Close with an unrelated
// context.
type Group struct {
	mu       sync.Mutex
	cfg      Config
	cfgErr   error // what is wrong with cfg, reported by Run
	inited   bool
	ctx      context.Context // tasks' context, cancelled by Close
	cancel   context.CancelFunc
	nextID   uint64
	running  map[uint64]Task // goroutines still running
	inClose  map[uint64]int  // running tasks blocked in a Close of this group, by id
	changed  chan struct{}   // closed and replaced when running or inClose shrinks or grows
	closers  []closer
	errs     []error // task errors, in the order they happened
	closing  bool
	closeCtx context.Context // the ctx of the Close that stopped the group
	done     chan struct{}   // closed when the first Close has finished
	result   error           // the first Close's result

	requested bool          // Shutdown was asked for (or StopOnError fired, or Close began)
	stopReq   chan struct{} // closed when requested becomes true
	cause     error         // the cause given to the first Shutdown, if any
}

type closer struct {
	id   uint64
	task Task
	fn   func(ctx context.Context) error
}

// New returns an empty Group with a zero Config.
func New() *Group { return &Group{} }

// NewWithConfig returns an empty Group that reports through cfg.
func NewWithConfig(cfg Config) *Group { return &Group{cfg: cfg} }

// groupKey carries the owning *Group in every task's context, for CloseContext.
type groupKey struct{}

// taskKey carries a taskRef in each task's context, so that a Close given
// that context (or one derived from it) knows which task is calling.
type taskKey struct{}

type taskRef struct {
	g  *Group
	id uint64
}

func (g *Group) initLocked() {
	if g.inited {
		return
	}
	g.inited = true
	g.cfg, g.cfgErr = g.cfg.withDefaults()
	g.ctx, g.cancel = context.WithCancel(context.WithValue(context.Background(), groupKey{}, g))
	g.running = make(map[uint64]Task)
	g.inClose = make(map[uint64]int)
	g.changed = make(chan struct{})
	g.done = make(chan struct{})
	g.stopReq = make(chan struct{})
}

// notifyLocked wakes a Close waiting for tasks to return.
func (g *Group) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

func checkName(name string) error {
	if strings.TrimSpace(name) == "" {
		return errors.New("lifecycle: task name must not be empty")
	}
	return nil
}

// nextIDLocked returns the id of a new registration named name, or
// ErrClosed once the group has begun closing.
func (g *Group) nextIDLocked(name string) (uint64, error) {
	g.initLocked()
	if g.closing {
		return 0, fmt.Errorf("%w: cannot register %q", ErrClosed, name)
	}
	g.nextID++
	return g.nextID, nil
}

// register records a running task and returns its id and context, or
// ErrClosed.
func (g *Group) register(name string, kind Kind, interval time.Duration) (uint64, context.Context, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	id, err := g.nextIDLocked(name)
	if err != nil {
		return 0, nil, err
	}
	g.running[id] = Task{Name: name, Kind: kind, Since: g.cfg.Now(), Interval: interval}
	return id, context.WithValue(g.ctx, taskKey{}, taskRef{g, id}), nil
}

// Go runs fn in a new goroutine owned by the group. fn's context is cancelled
// when Close begins; fn should return promptly after that. An error fn
// returns (other than the cancellation itself once Close has begun) is
// reported to Config.OnError and the logger as it happens and is included in
// Close's result.
//
// A panic in fn is not recovered (see the package doc). On a closed group Go
// returns ErrClosed and starts nothing.
func (g *Group) Go(name string, fn func(ctx context.Context) error) error {
	if err := checkName(name); err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("lifecycle: Go(%q): nil function", name)
	}
	id, ctx, err := g.register(name, KindGo, 0)
	if err != nil {
		return err
	}
	go func() {
		defer g.finish(id, name)
		g.taskReturned(name, fn(ctx))
	}()
	return nil
}

// Every runs fn every interval on one goroutine with one ticker, until Close.
// The first run is one interval after registration. Runs never overlap: if fn
// takes longer than interval, the ticks that fall due meanwhile are dropped
// (time.Ticker's behaviour), so a slow fn slows the rate instead of piling up
// work. fn's context is cancelled when Close begins.
//
// interval must be positive. On a closed group Every returns ErrClosed and
// starts nothing.
func (g *Group) Every(name string, interval time.Duration, fn func(ctx context.Context)) error {
	if err := checkName(name); err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("lifecycle: Every(%q): nil function", name)
	}
	if interval <= 0 {
		return fmt.Errorf("lifecycle: Every(%q): interval must be positive, got %s", name, interval)
	}
	id, ctx, err := g.register(name, KindEvery, interval)
	if err != nil {
		return err
	}
	go func() {
		defer g.finish(id, name)
		runEvery(ctx, interval, fn)
	}()
	return nil
}

// runEvery runs fn every interval on one ticker until ctx ends.
func runEvery(ctx context.Context, interval time.Duration, fn func(ctx context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A tick and the cancellation can be ready together; prefer
			// stopping so no run starts after Close began.
			if ctx.Err() != nil {
				return
			}
			fn(ctx)
		}
	}
}

// OnClose registers fn to run during Close, after every task of the group has
// returned. Closers run in reverse order of registration (the last resource
// opened is the first closed), each one even if an earlier one failed, with
// the context given to Close. Their errors are joined into Close's result.
//
// On a closed group OnClose returns ErrClosed and fn is not called.
func (g *Group) OnClose(name string, fn func(ctx context.Context) error) error {
	if err := checkName(name); err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("lifecycle: OnClose(%q): nil function", name)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	id, err := g.nextIDLocked(name)
	if err != nil {
		return err
	}
	g.closers = append(g.closers, closer{
		id:   id,
		task: Task{Name: name, Kind: KindOnClose, Since: g.cfg.Now()},
		fn:   fn,
	})
	return nil
}

func (g *Group) taskReturned(name string, err error) {
	if err == nil {
		return
	}
	g.mu.Lock()
	// The cancellation Close caused is how a task is asked to stop, not a
	// failure.
	if g.closing && errors.Is(err, context.Canceled) {
		g.mu.Unlock()
		return
	}
	err = fmt.Errorf("lifecycle: task %q: %w", name, err)
	g.errs = append(g.errs, err)
	stop := g.cfg.StopOnError && g.requestLocked(nil)
	g.mu.Unlock()
	g.report(name, err)
	if stop {
		g.cfg.Logger.Info("lifecycle: shutdown requested: a task failed", "task", name)
	}
}

func (g *Group) report(name string, err error) {
	g.cfg.Logger.Error("lifecycle: task failed", "task", name, "err", err)
	if g.cfg.OnError != nil {
		g.cfg.OnError(name, err)
	}
}

func (g *Group) finish(id uint64, name string) {
	g.mu.Lock()
	delete(g.running, id)
	g.notifyLocked()
	g.mu.Unlock()
	g.cfg.Logger.Debug("lifecycle: task returned", "task", name)
}

// requestLocked records a request for shutdown and reports whether it was
// the first.
func (g *Group) requestLocked(cause error) bool {
	if g.requested {
		return false
	}
	g.requested = true
	g.cause = cause
	close(g.stopReq)
	return true
}

// pendingLocked lists the running tasks Close waits for: all but those
// blocked in a Close of this group themselves, which return only after it.
func (g *Group) pendingLocked() map[uint64]Task {
	if len(g.inClose) == 0 {
		return g.running
	}
	pending := make(map[uint64]Task, len(g.running))
	for id, t := range g.running {
		if g.inClose[id] == 0 {
			pending[id] = t
		}
	}
	return pending
}

// Tasks returns the tasks the group owns right now, in order of registration:
// goroutines still running and closers not yet run. After Close has returned
// successfully it is empty, but for a task that called Close itself until it
// returns.
func (g *Group) Tasks() []Task {
	g.mu.Lock()
	defer g.mu.Unlock()
	return sortedTasks(g.running, g.closers)
}

// sortedTasks lists running tasks and pending closers in registration order.
func sortedTasks(running map[uint64]Task, closers []closer) []Task {
	ids := make([]uint64, 0, len(running)+len(closers))
	byID := make(map[uint64]Task, cap(ids))
	for id, t := range running {
		ids = append(ids, id)
		byID[id] = t
	}
	for _, c := range closers {
		ids = append(ids, c.id)
		byID[c.id] = c.task
	}
	slices.Sort(ids)
	out := make([]Task, len(ids))
	for i, id := range ids {
		out[i] = byID[id]
	}
	return out
}

// StuckError is returned (inside Close's joined error) when tasks were still
// running when Close's context ended. It matches the context's error with
// errors.Is, so a Close that ran out of time matches
// context.DeadlineExceeded.
type StuckError struct {
	Tasks []Task // the tasks still running, in order of registration
	Err   error  // the context's error
}

func (e *StuckError) Error() string {
	names := make([]string, len(e.Tasks))
	for i, t := range e.Tasks {
		names[i] = t.String()
	}
	return fmt.Sprintf("lifecycle: %d task(s) still running at close deadline: %s: %v",
		len(e.Tasks), strings.Join(names, ", "), e.Err)
}

func (e *StuckError) Unwrap() error { return e.Err }

// Close stops the group: it refuses new registrations, cancels every task's
// context, waits until every task has returned or ctx ends, then runs the
// closers in reverse order of registration. It returns errors.Join of the
// cause given to Shutdown (if any), the errors tasks returned, a
// *StuckError naming the tasks still running when ctx ended (matching ctx's
// error, usually context.DeadlineExceeded), and the closers' errors; nil
// when all went well.
//
// Closers run even when tasks are stuck, with ctx, so resources are released
// as far as possible. Close is idempotent and safe to call from several
// goroutines: later calls wait for the first one (or for their own ctx) and
// return its result.
//
// A task may close its own group if it passes its context, or one derived
// from it, to Close: Close then does not wait for that task (which returns
// after Close does), and ignores the cancellation of the task's context it
// causes itself, keeping only its deadline. A task that calls Close with an
// unrelated context cannot be told apart from the service's main goroutine
// and waits for itself until that context ends; a task that only wants the
// group stopped calls Shutdown, which does not block.
func (g *Group) Close(ctx context.Context) error {
	if self, ok := ctx.Value(taskKey{}).(taskRef); ok && self.g == g {
		// The task's context is a child of the one Close cancels: keep its
		// deadline and values, not that cancellation.
		var cancel context.CancelFunc
		ctx, cancel = detach(ctx)
		defer cancel()
		defer g.markInClose(self.id)()
	}

	g.mu.Lock()
	g.initLocked()
	if g.closing {
		done := g.done
		g.mu.Unlock()
		return g.awaitClose(ctx, done, "another Close")
	}
	g.closing = true
	g.closeCtx = ctx
	g.requestLocked(nil)
	g.mu.Unlock()

	g.cfg.Logger.Debug("lifecycle: closing")
	g.cancel() // after closeCtx is set, so CloseContext sees it in every task

	stuck := g.awaitTasks(ctx)
	errs := g.taskErrors()
	if stuck != nil {
		errs = append(errs, stuck)
	}
	errs = append(errs, g.runClosers(ctx)...)

	g.mu.Lock()
	g.result = errors.Join(errs...)
	close(g.done)
	g.mu.Unlock()
	return g.result
}

// markInClose records that task id is blocked in a Close of its own group,
// which must then not wait for it, and returns the function that unmarks
// it.
func (g *Group) markInClose(id uint64) (unmark func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	g.inClose[id]++
	g.notifyLocked()
	return func() {
		g.mu.Lock()
		if g.inClose[id]--; g.inClose[id] == 0 {
			delete(g.inClose, id)
		}
		g.mu.Unlock()
	}
}

// awaitTasks waits until every task Close waits for has returned, or ctx
// ends; it then returns a *StuckError naming those still running.
func (g *Group) awaitTasks(ctx context.Context) error {
	for {
		g.mu.Lock()
		pending := len(g.pendingLocked())
		changed := g.changed
		g.mu.Unlock()
		if pending == 0 {
			return nil
		}
		select {
		case <-changed:
			continue
		case <-ctx.Done():
		}
		g.mu.Lock()
		running := sortedTasks(g.pendingLocked(), nil)
		g.mu.Unlock()
		if len(running) == 0 {
			return nil
		}
		stuck := &StuckError{Tasks: running, Err: ctx.Err()}
		g.cfg.Logger.Error("lifecycle: tasks did not stop by the deadline", "err", stuck)
		return stuck
	}
}

// taskErrors returns the cause given to Shutdown, if any, and the errors
// tasks returned, in that order.
func (g *Group) taskErrors() []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	if g.cause != nil {
		errs = append(errs, fmt.Errorf("lifecycle: shutdown requested: %w", g.cause))
	}
	return append(errs, g.errs...)
}

// runClosers runs the closers in reverse order of registration with ctx,
// each even if an earlier one failed, and returns their errors. Each is
// dropped from the group once it has run. No closer can be added meanwhile:
// the group is closing.
func (g *Group) runClosers(ctx context.Context) []error {
	g.mu.Lock()
	closers := g.closers
	g.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		c := closers[i]
		g.cfg.Logger.Debug("lifecycle: running closer", "closer", c.task.Name)
		if err := c.fn(ctx); err != nil {
			err = fmt.Errorf("lifecycle: closer %q: %w", c.task.Name, err)
			errs = append(errs, err)
			g.report(c.task.Name, err)
		}
		g.mu.Lock()
		g.closers = g.closers[:i]
		g.mu.Unlock()
	}
	return errs
}

// detach returns ctx without its cancellation but with its deadline.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	d := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		return context.WithDeadline(d, dl)
	}
	return d, func() {}
}

// Closing reports whether Close has been called on the group.
func (g *Group) Closing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}

// CloseContext returns the context that was given to the Close stopping the
// group that owns ctx, when ctx is a task's context (from Go or Every) and
// Close has begun. Its deadline is the deadline of the whole shutdown, so a
// task can use it to finish in-flight work after its own context was
// cancelled and still return in time. In any other case it returns
// context.Background().
func CloseContext(ctx context.Context) context.Context {
	g, ok := ctx.Value(groupKey{}).(*Group)
	if !ok {
		return context.Background()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closeCtx == nil {
		return context.Background()
	}
	return g.closeCtx
}
