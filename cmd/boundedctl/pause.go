package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/bounded-go/bounded/queue"
)

// pauser pauses and resumes the queues of a namespace. The queue package's
// Inspector gains Pause and Resume in a later version; pauserOf finds them
// by this interface, so the commands work as soon as it has them, with no
// change here.
type pauser interface {
	Pause(ctx context.Context, queue string) error
	Resume(ctx context.Context, queue string) error
}

// errPauseUnsupported: this build's queue package cannot pause queues.
var errPauseUnsupported = errors.New("pause and resume are not supported by this version of the queue package (queue.Inspector has no Pause/Resume)")

func pauserOf(in *queue.Inspector) pauser {
	if p, ok := any(in).(pauser); ok {
		return p
	}
	return nil
}

func runPause(ctx context.Context, e *env, _ *opts, args []string) error {
	return e.pauseOrResume(ctx, "pause", args)
}

func runResume(ctx context.Context, e *env, _ *opts, args []string) error {
	return e.pauseOrResume(ctx, "resume", args)
}

func (e *env) pauseOrResume(ctx context.Context, what string, args []string) error {
	if err := nargs(what, args, 1, 1, "one queue"); err != nil {
		return err
	}
	if e.pauser == nil {
		return fmt.Errorf("%s %s: %w", what, args[0], errPauseUnsupported)
	}
	if _, err := e.lookupQueue(ctx, args[0]); err != nil {
		return err
	}
	f := e.pauser.Pause
	if what == "resume" {
		f = e.pauser.Resume
	}
	if err := f(ctx, args[0]); err != nil {
		return e.redisErr(err)
	}
	fmt.Fprintf(e.stdout, "%sd %s\n", what, args[0])
	return nil
}
