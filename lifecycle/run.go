package lifecycle

import (
	"context"
	"fmt"
	"time"
)

// DefaultShutdownTimeout is Run's deadline for Close when
// Config.ShutdownTimeout is zero. It leaves room under the 30 s a container
// orchestrator usually waits between SIGTERM and SIGKILL.
const DefaultShutdownTimeout = 15 * time.Second

// Shutdown asks for the group to be stopped and returns at once; it is safe
// to call from the group's own tasks, where Close would wait for the caller
// (fx's Shutdowner). Run, or whoever waits on ShutdownRequested, then closes
// the group. A non-nil cause becomes part of the group's result (Close, Run
// and Wait return it, wrapped), so that a service stopped by one of its
// tasks exits with an error; only the first request's cause counts.
func (g *Group) Shutdown(cause error) {
	g.mu.Lock()
	g.initLocked()
	first := g.requestLocked(cause)
	g.mu.Unlock()
	if first {
		g.cfg.Logger.Info("lifecycle: shutdown requested", "cause", cause)
	}
}

// ShutdownRequested returns a channel closed once the group should stop:
// Shutdown was called, a task failed under Config.StopOnError, or Close
// began. Run waits on it; an owner with its own select loop can too.
func (g *Group) ShutdownRequested() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	return g.stopReq
}

// Run blocks until ctx ends or a shutdown is requested (ShutdownRequested),
// then closes the group with a deadline of Config.ShutdownTimeout and returns
// Close's result. With signal.NotifyContext it is a service's whole main:
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	return g.Run(ctx) // after starting the components on g
//
// The end of ctx is the ordinary way to stop and is not an error. If the
// group is closed meanwhile by a direct Close, Run returns that result, or,
// should that Close outlast Config.ShutdownTimeout, an error saying it was
// still waiting (matching context.DeadlineExceeded); Wait then gives the
// result. A negative Config.ShutdownTimeout is an error wrapping
// ErrInvalidConfig, returned at once and with nothing closed.
func (g *Group) Run(ctx context.Context) error {
	g.mu.Lock()
	g.initLocked()
	timeout, cfgErr := g.cfg.ShutdownTimeout, g.cfgErr
	req := g.stopReq
	g.mu.Unlock()
	if cfgErr != nil {
		return cfgErr
	}
	var reason any
	select {
	case <-ctx.Done():
		reason = context.Cause(ctx)
	case <-req:
		reason = "shutdown requested"
	}
	g.cfg.Logger.Info("lifecycle: stopping", "reason", reason, "timeout", timeout)
	// The shutdown gets its own deadline: ctx has ended already, or is the
	// service's life, not its shutdown's.
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	return g.Close(closeCtx)
}

// Wait blocks until a Close of the group (made by anyone: Run, the owner, a
// task) has finished, and returns its result; or returns an error matching
// ctx's once ctx ends. It does not close the group itself.
func (g *Group) Wait(ctx context.Context) error {
	g.mu.Lock()
	g.initLocked()
	done := g.done
	g.mu.Unlock()
	return g.awaitClose(ctx, done, "Close")
}

// awaitClose returns the result of the Close that closes done, or an error
// naming what it waited for, matching ctx's, once ctx ends. A Close that
// already finished gives its result whatever the state of ctx (one select
// over both would pick at random).
func (g *Group) awaitClose(ctx context.Context, done <-chan struct{}, what string) error {
	select {
	case <-done:
		return g.result
	default:
	}
	select {
	case <-done:
		return g.result
	case <-ctx.Done():
		return fmt.Errorf("lifecycle: waiting for %s: %w", what, ctx.Err())
	}
}
