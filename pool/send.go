package pool

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/backoff"
)

// sendCommand sends cmd, and sends it again while go-redis finds its own
// pool full (see waitForConn).
func (h *laneHook) sendCommand(ctx context.Context, next redis.ProcessHook, cmd redis.Cmder) error {
	err := next(ctx, cmd)
	if !errors.Is(err, redis.ErrPoolExhausted) {
		return err
	}
	err = h.waitForConn(ctx, func() (bool, error) {
		cmd.SetErr(nil)
		err := next(ctx, cmd)
		return errors.Is(err, redis.ErrPoolExhausted), err
	})
	if le := (*LaneError)(nil); errors.As(err, &le) {
		cmd.SetErr(err)
	}
	return err
}

// sendPipeline sends cmds, and sends again those go-redis could not send
// for want of a connection (see resendUnsent).
func (h *laneHook) sendPipeline(ctx context.Context, next redis.ProcessPipelineHook, cmds []redis.Cmder) error {
	err := next(ctx, cmds)
	if unsent := unsentCmds(cmds); unsent != nil {
		return h.resendUnsent(ctx, next, cmds, unsent)
	}
	return err
}

// waitForConn handles go-redis's "pool exhausted", which the gate should make
// impossible but for two cases: a dial whose caller gave up goes on in
// go-redis's own goroutine, holding a connection slot, and the next caller
// through the gate finds the pool full until it lands; and on Redis Cluster
// go-redis sends commands of its own (CLUSTER SLOTS when it reloads the slot
// map) on a node's connections, outside the gate. Nothing was sent yet, so
// the call is tried again after pauses doubling from 1ms to 50ms (no
// jitter: this process's own callers, not a fleet, are waiting), within the
// lane's max wait and the caller's context, for as long as call says so; if
// it still cannot get a connection it fails with a LaneError like any other
// wait.
func (h *laneHook) waitForConn(ctx context.Context, call func() (again bool, err error)) error {
	start := time.Now()
	for n := 1; ; n++ {
		pause := backoff.Exp(n, time.Millisecond, 50*time.Millisecond)
		if h.wouldOutwait(ctx, start, pause) {
			return h.gate.errorf(context.DeadlineExceeded,
				"go-redis's pool was full (a dial its caller abandoned, or go-redis's own cluster bookkeeping)", time.Since(start))
		}
		if !backoff.Sleep(ctx, pause) {
			return h.gate.errorf(ctx.Err(), "the caller's context ended while a connection was being dialled", time.Since(start))
		}
		again, err := call()
		if !again {
			return err
		}
	}
}

// wouldOutwait reports whether a pause of d, in a wait that began at start,
// would run past the lane's max wait or the caller's deadline.
func (h *laneHook) wouldOutwait(ctx context.Context, start time.Time, d time.Duration) bool {
	if h.gate.maxWait > 0 && time.Since(start)+d > h.gate.maxWait {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < d
}

// resendUnsent sends again, after short pauses (see waitForConn), the
// commands of a pipeline that go-redis could not send for want of a
// connection, and only those. On Redis Cluster a pipeline is split by node
// and each node's part runs on its own: the part for one node may find that
// node's pool full while the others have already run, and sending the whole
// pipeline again would run them twice. A part still unsent when the wait
// ends fails with the LaneError; the commands that ran keep their replies.
func (h *laneHook) resendUnsent(ctx context.Context, next redis.ProcessPipelineHook, cmds, unsent []redis.Cmder) error {
	whole := len(unsent) == len(cmds)
	var last error
	err := h.waitForConn(ctx, func() (bool, error) {
		setErrs(unsent, nil)
		last = next(ctx, unsent)
		unsent = unsentCmds(unsent)
		return unsent != nil, last
	})
	if le := (*LaneError)(nil); errors.As(err, &le) {
		setErrs(unsent, err)
		return err
	}
	if whole {
		return last
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil {
			return e
		}
	}
	return nil
}

// unsentCmds returns the commands of a pipeline that go-redis failed with
// ErrPoolExhausted, which it returns before anything is written: nil if
// there are none, all of cmds if none was sent. A transaction (MULTI ...
// EXEC) goes to one node, so it is sent whole or not at all; its framing
// commands carry no error of their own on Redis Cluster and count with
// the rest. A partly sent transaction cannot be completed: nil.
func unsentCmds(cmds []redis.Cmder) []redis.Cmder {
	body := cmds
	tx := len(cmds) >= 2 && strings.EqualFold(cmds[0].Name(), "multi") && strings.EqualFold(cmds[len(cmds)-1].Name(), "exec")
	if tx {
		body = cmds[1 : len(cmds)-1]
	}
	var unsent []redis.Cmder
	for _, c := range body {
		if errors.Is(c.Err(), redis.ErrPoolExhausted) {
			unsent = append(unsent, c)
		}
	}
	switch {
	case len(unsent) == 0:
		return nil
	case len(unsent) == len(body):
		return cmds
	case tx:
		return nil
	}
	return unsent
}
