package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/queue"
)

// defaultLimit is a page's size unless --limit says otherwise.
const defaultLimit = 20

// maxTopUps bounds the further reads that fill a short page.
const maxTopUps = 3

func pageFlags(fs *flag.FlagSet, o *opts) {
	fs.IntVar(&o.limit, "limit", defaultLimit, fmt.Sprintf("page size, 1..%d", queue.MaxPageLimit))
	fs.StringVar(&o.cursor, "cursor", "", "cursor of the page to show (printed after the previous page)")
}

func lsFlags(fs *flag.FlagSet, o *opts) {
	pageFlags(fs, o)
	fs.StringVar(&o.state, "state", string(queue.StateReady), "ready, delayed, running or dead")
	fs.BoolVar(&o.payload, "payloads", false, "whole payloads instead of 1 KiB previews")
}

func deadFlags(fs *flag.FlagSet, o *opts) {
	pageFlags(fs, o)
	fs.BoolVar(&o.payload, "payloads", false, "whole payloads instead of 1 KiB previews")
}

func showFlags(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.queue, "queue", "", "the job's queue; without it, the job is searched in every queue")
	fs.IntVar(&o.search, "search", 100, "without --queue: the most queues searched")
}

func yesFlag(fs *flag.FlagSet, o *opts) {
	fs.BoolVar(&o.yes, "yes", false, "confirm a destructive command")
}

func requeueFlags(fs *flag.FlagSet, o *opts) {
	yesFlag(fs, o)
	fs.BoolVar(&o.all, "all", false, "every dead letter of the queue (needs --yes)")
}

func checkPage(o *opts) error {
	if o.limit < 1 || o.limit > queue.MaxPageLimit {
		return usagef("--limit must be in 1..%d, got %d", queue.MaxPageLimit, o.limit)
	}
	return nil
}

// args checks the number of positional arguments.
func nargs(cmd string, args []string, min, max int, synopsis string) error {
	if len(args) < min || (max >= 0 && len(args) > max) {
		return usagef("%s takes %s, got %d argument(s)", cmd, synopsis, len(args))
	}
	return nil
}

// errUnknownQueue: the namespace's registry does not list the queue.
var errUnknownQueue = errors.New("unknown queue")

func isNotFound(err error) bool {
	return errors.Is(err, errUnknownQueue) || errors.Is(err, queue.ErrJobNotFound) || errors.Is(err, queue.ErrNotFound)
}

// lookupQueue returns the queue's counts, or errUnknownQueue. The Inspector
// pages queues by name after an exclusive cursor, so the page of one queue
// after the greatest name below it (names are at most check.MaxNameBytes
// bytes, and none ends with a NUL, a control character) starts with the
// queue when it exists: one page of one queue, not a scan.
func (e *env) lookupQueue(ctx context.Context, name string) (queue.QueueInfo, error) {
	if err := check.Name("queue name", name); err != nil {
		return queue.QueueInfo{}, usagef("%v", err)
	}
	last := name[len(name)-1]
	below := name[:len(name)-1] + string([]byte{last - 1}) + strings.Repeat("\xff", check.MaxNameBytes-len(name))
	page, err := e.in.Queues(ctx, below, 1)
	if err != nil {
		return queue.QueueInfo{}, e.redisErr(fmt.Errorf("looking up queue %q: %w", name, err))
	}
	if len(page.Queues) == 0 || page.Queues[0].Name != name {
		return queue.QueueInfo{}, fmt.Errorf("%w %q in namespace %q (never used, or not seen for 30 days; 'boundedctl stats' lists the queues)", errUnknownQueue, name, e.namespace)
	}
	return page.Queues[0], nil
}

type statsOut struct {
	Queues    []queue.QueueInfo    `json:"queues"`
	Next      string               `json:"next,omitempty"`
	Consumers []queue.ConsumerInfo `json:"consumers"`
}

func runStats(ctx context.Context, e *env, o *opts, args []string) error {
	if err := nargs("stats", args, 0, 1, "at most one queue"); err != nil {
		return err
	}
	if err := checkPage(o); err != nil {
		return err
	}
	var out statsOut
	if len(args) == 1 {
		qi, err := e.lookupQueue(ctx, args[0])
		if err != nil {
			return err
		}
		out.Queues = []queue.QueueInfo{qi}
	} else {
		page, err := e.in.Queues(ctx, o.cursor, o.limit)
		if err != nil {
			return e.redisErr(err)
		}
		out.Queues, out.Next = page.Queues, page.Next
	}
	cs, err := e.in.Consumers(ctx)
	if err != nil {
		return e.redisErr(err)
	}
	out.Consumers = cs
	if out.Queues == nil {
		out.Queues = []queue.QueueInfo{}
	}
	if out.Consumers == nil {
		out.Consumers = []queue.ConsumerInfo{}
	}
	if e.json {
		return e.writeJSON(out)
	}
	return e.printStats(out)
}

func runLs(ctx context.Context, e *env, o *opts, args []string) error {
	if err := nargs("ls", args, 1, 1, "one queue"); err != nil {
		return err
	}
	st := queue.JobState(o.state)
	switch st {
	case queue.StateReady, queue.StateDelayed, queue.StateRunning, queue.StateDead:
	default:
		return usagef("--state %q: one of ready, delayed, running, dead", o.state)
	}
	return e.list(ctx, args[0], st, o)
}

func runDead(ctx context.Context, e *env, o *opts, args []string) error {
	if err := nargs("dead", args, 1, 1, "one queue"); err != nil {
		return err
	}
	return e.list(ctx, args[0], queue.StateDead, o)
}

// list prints one page of a queue's jobs in a state: one lookup of the
// queue, one page of Inspector.Jobs.
func (e *env) list(ctx context.Context, name string, st queue.JobState, o *opts) error {
	if err := checkPage(o); err != nil {
		return err
	}
	qi, err := e.lookupQueue(ctx, name)
	if err != nil {
		return err
	}
	var lo []queue.ListOption
	if o.payload {
		lo = append(lo, queue.WithPayloads())
	}
	page, err := e.in.Jobs(ctx, name, st, o.cursor, o.limit, lo...)
	if err != nil {
		return e.redisErr(err)
	}
	// A page may hold fewer jobs than its limit with more to follow (wake
	// markers take places in the ready list, the byte bound cuts a page of
	// large jobs): fill it from the next pages, at most maxTopUps more
	// reads, so Redis work stays bounded by the limit.
	for range maxTopUps {
		if len(page.Jobs) >= o.limit || page.Next == "" {
			break
		}
		more, err := e.in.Jobs(ctx, name, st, page.Next, o.limit-len(page.Jobs), lo...)
		if err != nil {
			return e.redisErr(err)
		}
		page.Jobs, page.Next = append(page.Jobs, more.Jobs...), more.Next
	}
	if page.Jobs == nil {
		page.Jobs = []queue.ListedJob{}
	}
	if e.json {
		return e.writeJSON(page)
	}
	return e.printJobs(qi, st, page)
}

func runShow(ctx context.Context, e *env, o *opts, args []string) error {
	if err := nargs("show", args, 1, 1, "one job ID"); err != nil {
		return err
	}
	id := args[0]
	if o.queue != "" {
		if _, err := e.lookupQueue(ctx, o.queue); err != nil {
			return err
		}
		info, err := e.in.Get(ctx, o.queue, id)
		if err != nil {
			return e.redisErr(err)
		}
		return e.showJob(info)
	}
	if o.search < 1 {
		return usagef("--search must be at least 1, got %d", o.search)
	}
	info, err := e.search(ctx, id, o.search)
	if err != nil {
		return err
	}
	return e.showJob(info)
}

// search looks for the job in the namespace's queues, by name, at most max
// of them: one lookup (Inspector.Get, two round trips) per queue until
// found.
func (e *env) search(ctx context.Context, id string, max int) (queue.JobInfo, error) {
	cursor, seen := "", 0
	var incomplete []string
	for {
		page, err := e.in.Queues(ctx, cursor, min(100, max-seen))
		if err != nil {
			return queue.JobInfo{}, e.redisErr(err)
		}
		for _, q := range page.Queues {
			seen++
			info, err := e.in.Get(ctx, q.Name, id)
			switch {
			case err == nil:
				return info, nil
			case errors.Is(err, queue.ErrLookupIncomplete):
				incomplete = append(incomplete, q.Name)
			case errors.Is(err, queue.ErrInvalidArgument): // the ID: no queue can hold it
				msg := err.Error()
				if _, why, ok := strings.Cut(msg, queue.ErrInvalidArgument.Error()+": "); ok {
					msg = why // not the name of the queue that happened to be asked first
				}
				return queue.JobInfo{}, usagef("show: %s", msg)
			case !errors.Is(err, queue.ErrJobNotFound):
				return queue.JobInfo{}, e.redisErr(err)
			}
		}
		cursor = page.Next
		if cursor == "" || seen >= max {
			break
		}
	}
	msg := fmt.Sprintf("job %q is in none of the %d queue(s) searched in namespace %q", id, seen, e.namespace)
	if cursor != "" {
		msg += fmt.Sprintf("; more queues were not searched (--search %d): give --queue", max)
	}
	if len(incomplete) > 0 {
		msg += fmt.Sprintf("; %s hold(s) more jobs than one lookup reads, it may be deep in them", strings.Join(incomplete, ", "))
		return queue.JobInfo{}, fmt.Errorf("%w: %s", queue.ErrLookupIncomplete, msg)
	}
	return queue.JobInfo{}, fmt.Errorf("%w: %s", queue.ErrJobNotFound, msg)
}

func (e *env) showJob(info queue.JobInfo) error {
	if e.json {
		return e.writeJSON(info)
	}
	return e.printJob(info)
}

func runRequeue(ctx context.Context, e *env, o *opts, args []string) error {
	if len(args) == 0 {
		return usagef("requeue takes a queue and dead letter IDs, or a queue and --all --yes")
	}
	name, ids := args[0], args[1:]
	switch {
	case o.all && len(ids) > 0:
		return usagef("requeue: give dead letter IDs or --all, not both")
	case o.all && !o.yes:
		return usagef("requeue --all moves every dead letter of %q back to its ready list: add --yes to confirm", name)
	case !o.all && len(ids) == 0:
		return usagef("requeue %s: give the IDs of dead letters ('boundedctl dead %s' lists them), or --all --yes", name, name)
	}
	if _, err := e.lookupQueue(ctx, name); err != nil {
		return err
	}
	var n int
	var err error
	if o.all {
		n, err = e.requeueAll(ctx, name)
	} else {
		n, err = e.in.Requeue(ctx, name, ids...)
	}
	fmt.Fprintf(e.stdout, "requeued %d dead letter(s) of %s\n", n, name)
	return e.redisErr(err)
}

// requeueAll requeues the dead letters page by page (the page's limit bounds
// each read). The cursor goes on from the last page's oldest dead letter,
// so a job that dies again while this runs (it is newer) is not requeued
// twice.
//
// A dead letter that cannot be requeued does not stop it: a malformed one
// (its element does not decode) is left and counted, one gone meanwhile
// (requeued or purged by another) skipped; only a failure of Redis stops
// it. The malformed are reported at the end.
func (e *env) requeueAll(ctx context.Context, name string) (int, error) {
	total, cursor := 0, ""
	var malformed []string
	for {
		page, err := e.in.Jobs(ctx, name, queue.StateDead, cursor, queue.MaxPageLimit)
		if err != nil {
			return total, err
		}
		ids := make([]string, 0, len(page.Jobs))
		for _, j := range page.Jobs {
			if j.Malformed {
				malformed = append(malformed, j.ID)
				continue
			}
			ids = append(ids, j.ID)
		}
		if len(ids) > 0 {
			n, err := e.in.Requeue(ctx, name, ids...)
			total += n
			// Requeue goes through every ID and reports those it did
			// not find at the end; any other error stopped it.
			if err != nil && !errors.Is(err, queue.ErrNotFound) {
				return total, err
			}
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if len(malformed) > 0 {
		shown := malformed[:min(len(malformed), 5)]
		return total, fmt.Errorf("%d malformed dead letter(s) of %q cannot be requeued (%s): 'boundedctl dead %s' lists them",
			len(malformed), name, strings.Join(shown, ", "), name)
	}
	return total, nil
}

func runPurge(ctx context.Context, e *env, o *opts, args []string) error {
	if err := nargs("purge", args, 1, 1, "one queue"); err != nil {
		return err
	}
	if !o.yes {
		return usagef("purge deletes every dead letter of %q: add --yes to confirm", args[0])
	}
	if _, err := e.lookupQueue(ctx, args[0]); err != nil {
		return err
	}
	n, err := e.in.Purge(ctx, args[0])
	fmt.Fprintf(e.stdout, "purged %d dead letter(s) of %s\n", n, args[0])
	return e.redisErr(err)
}

func runCancel(ctx context.Context, e *env, _ *opts, args []string) error {
	if err := nargs("cancel", args, 2, 2, "a queue and a job ID"); err != nil {
		return err
	}
	if _, err := e.lookupQueue(ctx, args[0]); err != nil {
		return err
	}
	if err := e.in.Cancel(ctx, args[0], args[1]); err != nil {
		return e.redisErr(err)
	}
	fmt.Fprintf(e.stdout, "cancelled %s of %s\n", args[1], args[0])
	return nil
}
