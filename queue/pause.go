package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Pausing a queue, fleet-wide.
//
// A paused queue has a flag key in its slot ({ns:q}:paused). The take
// script reads it and hands out nothing while it is set, so every worker
// of every process stops starting the queue's jobs at its next take, with
// no message to deliver and nothing to poll. Enqueues, promotions of
// delayed jobs and retries go on: the queue fills (a bounded queue up to
// its MaxLen). Jobs already taken run to their end. Resume deletes the
// flag and rings the queue's doorbell, which wakes an idle consumer at once;
// one that takes only part of the backlog rings it again for the others.
// A ring while paused costs the consumer that pops it one take that
// returns nothing.

// pauseAtLimitScript is Pause at maxmemory: a pause is what an operator
// may need most when Redis is full. KEYS: paused flag.
var pauseAtLimitScript = redis.NewScript(allowOOM + `
return redis.call('SET', KEYS[1], '1')
`)

// resumeScript deletes the paused flag and rings the doorbell if the
// ready list holds anything (a ring for an empty list wakes nobody for
// anything, and on a name never used would leave a key nothing deletes).
// The DEL comes first, so that Redis runs the ZADD even at maxmemory when
// the queue was paused. KEYS: paused flag, bell, ready, the level ready
// lists (keys.readyLevels). Returns 1 when it was paused.
var resumeScript = redis.NewScript(`
local was = redis.call('DEL', KEYS[1])
if redis.call('EXISTS', unpack(KEYS, 3)) > 0 then redis.call('ZADD', KEYS[2], 0, '1') end
return was
`)

// Pause pauses the queue for every consumer of the fleet: no worker takes
// its jobs until Resume. Enqueues still work, and jobs already running
// finish. Pausing a paused queue is no error.
func (q *Queue) Pause(ctx context.Context) error {
	c := q.p.Client()
	err := c.Set(ctx, q.k.paused, "1", 0).Err()
	if isOOM(err) {
		err = pauseAtLimitScript.Run(ctx, c, []string{q.k.paused}).Err()
	}
	if err != nil {
		return q.errorf("pause: %w", err)
	}
	q.noteSeen(ctx)
	return nil
}

// Resume ends a pause: the queue's doorbell rings if it holds jobs, and
// idle consumers take them at once. Resuming a queue that is not paused is no error.
func (q *Queue) Resume(ctx context.Context) error {
	if err := resumeScript.Run(ctx, q.p.Client(), append([]string{q.k.paused, q.k.bell, q.k.ready, q.k.fair()}, q.k.levels...)).Err(); err != nil {
		return q.errorf("resume: %w", err)
	}
	return nil
}

// Paused reports whether the queue is paused.
func (q *Queue) Paused(ctx context.Context) (bool, error) {
	n, err := q.p.Client().Exists(ctx, q.k.paused).Result()
	if err != nil {
		return false, q.errorf("paused: %w", err)
	}
	return n == 1, nil
}

// ErrUnknownQueue is Inspector.Pause's error for a name the namespace's
// registry does not list (see Inspector.Queues).
var ErrUnknownQueue = errors.New("queue: unknown queue")

// Pause pauses queue for the whole fleet (see Queue.Pause). It refuses,
// with ErrUnknownQueue, a name that Inspector.Queues does not list: an
// operator's typo would otherwise pause, and list, a queue nobody uses
// while the one meant keeps running. Queue.Pause pauses a queue before
// its first use.
func (in *Inspector) Pause(ctx context.Context, queue string) error {
	q, err := in.queue(queue)
	if err != nil {
		return fmt.Errorf("queue: inspector: pause: %w", err)
	}
	err = in.p.Client().ZScore(ctx, queuesKey(in.ns), queue).Err()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("queue: inspector: pause: %w %q in namespace %q (Queue.Pause pauses a queue before its first use)", ErrUnknownQueue, queue, in.ns)
	}
	if err != nil {
		return fmt.Errorf("queue: inspector: pause %q: %w", queue, err)
	}
	return q.Pause(ctx)
}

// Resume ends a pause of queue (see Queue.Resume).
func (in *Inspector) Resume(ctx context.Context, queue string) error {
	q, err := in.queue(queue)
	if err != nil {
		return fmt.Errorf("queue: inspector: resume: %w", err)
	}
	return q.Resume(ctx)
}
