package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/bounded-go/bounded/queue"
)

func tailFlags(fs *flag.FlagSet, o *opts) {
	fs.IntVar(&o.count, "count", 0, "stop after this many outcomes (0: until interrupted)")
}

// errEnough ends a tail that printed --count outcomes.
var errEnough = errors.New("enough outcomes")

// runTail prints the outcomes of the queues' jobs as workers write them
// (queue.Inspector.Tail), one line each (--json: one JSON object a line),
// until interrupted or --count. Workers start publishing at their next
// heartbeat, and only while somebody tails: see queue/tail.go.
func runTail(ctx context.Context, e *env, o *opts, args []string) error {
	if len(args) == 0 || len(args) > queue.MaxTailQueues {
		return usagef("tail takes 1 to %d queues, got %d", queue.MaxTailQueues, len(args))
	}
	if o.count < 0 {
		return usagef("--count must not be negative, got %d", o.count)
	}
	// --timeout bounds the whole start: the lookups, the connection, the
	// subscription and the registration (queue.TailStartTimeout); then the
	// tail runs until interrupted or --count.
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, e.timeout)
	for _, name := range args {
		if _, err := e.lookupQueue(lctx, name); err != nil {
			cancel()
			return e.tailStartErr(err)
		}
	}
	cancel()
	left := e.timeout - time.Since(start)
	if left <= 0 {
		return e.tailStartErr(context.DeadlineExceeded)
	}
	// Following is announced once it is true (the subscription confirmed,
	// the registration written), not before a start that may still fail.
	started := func() {
		if !e.json {
			fmt.Fprintf(e.stderr, "following %d queue(s); workers start publishing at their next heartbeat (10s by default)\n", len(args))
		}
	}
	tctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	n := 0
	var werr error
	err := e.in.Tail(tctx, args, func(ev queue.TailEvent) {
		if werr != nil || (o.count > 0 && n >= o.count) {
			return
		}
		werr = e.printEvent(ev)
		if werr != nil {
			stop(werr) // nobody reads what follows
			return
		}
		if n++; o.count > 0 && n >= o.count {
			stop(errEnough)
		}
	}, queue.TailStartTimeout(left), queue.TailStarted(started))
	if werr != nil {
		return fmt.Errorf("printing outcomes: %w", werr)
	}
	if !errors.Is(err, queue.ErrTailLost) {
		err = e.tailStartErr(err)
	}
	return e.redisErr(err)
}

// tailStartErr is the error of a start that ran out --timeout; others pass.
func (e *env) tailStartErr(err error) error {
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("tail: did not start within --timeout %s: %w", e.timeout, err)
}

func (e *env) printEvent(ev queue.TailEvent) error {
	if e.json {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	}
	line := fmt.Sprintf("%s  %s  %-5s  %s", ev.At.UTC().Format(time.DateTime+".000"), ev.Queue, ev.Outcome, ev.ID)
	switch ev.Outcome {
	case "retry":
		line += fmt.Sprintf("  next %s: %s", when(ev.RetryAt), text([]byte(ev.Error), 200))
	case "dead":
		line += fmt.Sprintf("  after %d attempt(s): %s", ev.Attempts, text([]byte(ev.Error), 200))
	}
	_, err := fmt.Fprintln(e.stdout, line)
	return err
}
