package main

import (
	"context"
	"fmt"
)

func runPause(ctx context.Context, e *env, _ *opts, args []string) error {
	return e.pauseOrResume(ctx, "pause", args)
}

func runResume(ctx context.Context, e *env, _ *opts, args []string) error {
	return e.pauseOrResume(ctx, "resume", args)
}

// pauseOrResume pauses or resumes a queue the registry lists, for the
// whole fleet (queue.Inspector.Pause, Resume). Workers of a version
// before pause do not read the flag: they go on taking the queue's jobs.
func (e *env) pauseOrResume(ctx context.Context, what string, args []string) error {
	if err := nargs(what, args, 1, 1, "one queue"); err != nil {
		return err
	}
	if _, err := e.lookupQueue(ctx, args[0]); err != nil {
		return err
	}
	f := e.in.Pause
	if what == "resume" {
		f = e.in.Resume
	}
	if err := f(ctx, args[0]); err != nil {
		return e.redisErr(err)
	}
	if what == "pause" {
		fmt.Fprintf(e.stdout, "paused %s: no worker takes its jobs until 'boundedctl resume %s' (running jobs finish)\n", args[0], args[0])
	} else {
		fmt.Fprintf(e.stdout, "resumed %s\n", args[0])
	}
	return nil
}
