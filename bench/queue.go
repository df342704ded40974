package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/bounded-go/bounded/internal/backoff"
)

// Queue compares bounded/queue with asynq and with a hand-written
// BLMOVE+LREM loop.
func (catalog) Queue(sz Sizes) Scenario {
	drain := func(sh queueShape) Case {
		return queueCase(fmt.Sprintf("drain %s no-op jobs, %s", fmtNum(float64(sz.Jobs)), sh),
			func(mk newQueueSystem) RunFunc { return drainRun(mk, sh) })
	}
	jobs := max(1, int(float64(sz.Rate)*sz.RateFor.Seconds()))
	idle := queueCase("idle, 3 queues x 5", func(mk newQueueSystem) RunFunc { return idleRun(mk, queueShape{3, 5}) })
	idle.Isolated = true
	return Scenario{
		Name:      "queue",
		Order:     10,
		Title:     "queue: bounded/queue vs asynq vs a hand-written loop",
		Peer:      "asynq v0.26.0",
		Reference: "hand-written BLMOVE+LREM",
		Cases: []Case{
			drain(queueShape{1, 10}),
			drain(queueShape{3, 5}),
			queueCase(fmt.Sprintf("enqueue -> handler start at %s jobs/s for %s, 1 queue x 10", fmtNum(float64(sz.Rate)), sz.RateFor),
				func(mk newQueueSystem) RunFunc { return latencyRun(mk, sz.Rate, jobs) }),
			queueCase(fmt.Sprintf("idle pickup, %d jobs one at a time, 1 queue x 10", sz.Pickups),
				func(mk newQueueSystem) RunFunc { return pickupRun(mk, sz.Pickups) }),
			idle,
		},
		Notes: []string{
			"Drains: the jobs are enqueued first (bounded: EnqueueBatch of 1,000; hand-written: LPUSH of 1,000; asynq, which has no batch enqueue: " +
				"Client.Enqueue from 16 goroutines), then the clock runs from starting the consumers to the last job's handler start. " +
				"Redis commands/job counts enqueue, fetch, acknowledgement and all background traffic of the run, commands inside Lua scripts included.",
			"bounded: queue.Config{} and queue.WorkerConfig{Concurrency: n} on a pool.Config{} pool; one Consumer, one Worker per queue " +
				"(its defaults: 5s BlockTimeout of the consumer's fetch hub, 10s heartbeat).",
			"asynq: one Server with asynq.Config{Concurrency: queues x n, Queues: the queues at priority 1}, as its README sets it up. " +
				"Defaults that matter here: an empty dequeue makes the processor sleep TaskCheckInterval/2 plus up to TaskCheckInterval " +
				"(1s: 0.5-1.5s) before it looks again, which is what its pickup latency measures; heartbeat 5s, delayed-task check 5s, " +
				"janitor 8s, health check 15s.",
			"hand-written: per queue n goroutines, each with its own connection, looping BLMOVE ready -> own list (5s timeout), run, LREM. " +
				"No recovery of the jobs of dead consumers, no retries, no delayed jobs: the floor, not a competitor.",
			"Latency: one job every 1/rate s, each stamped with its enqueue instant; a warm-up job runs first. " +
				"Idle pickup: each job is enqueued 5-25 ms after the previous one ran, when the consumers are idle again.",
			"Idle: 3 queues x 5 consumers, no jobs, each implementation on a redis-server of its own, measured at the same time " +
				"after a 6s warm-up, over whole 5s cycles; connections are INFO clients' connected_clients less the harness's own.",
		},
	}
}

// queueCase is a case whose three implementations run the same function.
func queueCase(name string, f func(newQueueSystem) RunFunc) Case {
	return Case{
		Name:      name,
		Bounded:   f(newBoundedQueues),
		Peer:      f(newAsynqQueues),
		Reference: f(newHandwritten),
	}
}

// split spreads n jobs over queues as evenly as can be: queue q gets jobs
// [bounds[q], bounds[q+1]).
func split(n, queues int) []int {
	bounds := make([]int, queues+1)
	for q := range queues {
		bounds[q+1] = bounds[q] + n/queues
		if q < n%queues {
			bounds[q+1]++
		}
	}
	return bounds
}

// drainRun enqueues the jobs, starts the consumers and measures until every
// job's handler has started; then it drains the consumers and checks that
// every job ran once and nothing is left in Redis.
func drainRun(mk newQueueSystem, sh queueShape) RunFunc {
	return func(ctx context.Context, r *Run) error {
		sys, err := mk(r.Redis.Addr(), sh, r)
		if err != nil {
			return err
		}
		defer sys.Close()
		total := r.Sizes.Jobs
		l := newLedger(total)
		bounds := split(total, sh.queues)
		for q := range sh.queues {
			payloads := make([][]byte, 0, bounds[q+1]-bounds[q])
			for i := bounds[q]; i < bounds[q+1]; i++ {
				payloads = append(payloads, l.payload(i))
			}
			if err := sys.EnqueueAll(ctx, q, payloads); err != nil {
				return fmt.Errorf("enqueue: %w", err)
			}
		}
		start := time.Now()
		if err := sys.Start(ctx, l.ran); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		if err := l.wait(ctx); err != nil {
			return err
		}
		elapsed := time.Since(start)
		if err := stopQueue(ctx, sys); err != nil {
			return err
		}
		calls, err := r.Redis.Calls(ctx)
		if err != nil {
			return err
		}
		r.Record("jobs/s", Higher, float64(total)/elapsed.Seconds())
		r.Record("Redis commands/job", Lower, float64(calls)/float64(total))
		l.check(r)
		return checkEmpty(ctx, r, sys)
	}
}

// stopQueue drains the consumers within 30s.
func stopQueue(ctx context.Context, sys queueSystem) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sys.Stop(ctx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

func checkEmpty(ctx context.Context, r *Run, sys queueSystem) error {
	left, err := sys.Left(ctx)
	if err != nil {
		return fmt.Errorf("counting what is left: %w", err)
	}
	r.Check(left == 0, "%d jobs left in Redis after every job ran and the consumers stopped", left)
	return nil
}

// latencyRun enqueues n jobs at rate per second into one queue with 10
// consumers and records enqueue -> handler start.
func latencyRun(mk newQueueSystem, rate, n int) RunFunc {
	return func(ctx context.Context, r *Run) error {
		sys, l, err := startOneQueue(ctx, r, mk, n)
		if err != nil {
			return err
		}
		defer sys.Close()
		interval := time.Second / time.Duration(rate)
		start := time.Now()
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d) // pacing the producer
			}
			if err := sys.Enqueue(ctx, 0, l.payload(i)); err != nil {
				return fmt.Errorf("enqueue: %w", err)
			}
		}
		if err := l.wait(ctx); err != nil {
			return err
		}
		if err := stopQueue(ctx, sys); err != nil {
			return err
		}
		recordLatency(r, l.latencies(0, n), true)
		l.check(r)
		return checkEmpty(ctx, r, sys)
	}
}

// pickupRun enqueues n jobs one at a time into an idle queue with 10
// consumers, each 5-25 ms after the previous one ran, and records enqueue
// -> handler start.
func pickupRun(mk newQueueSystem, n int) RunFunc {
	return func(ctx context.Context, r *Run) error {
		sys, l, err := startOneQueue(ctx, r, mk, n)
		if err != nil {
			return err
		}
		defer sys.Close()
		gaps := rand.New(rand.NewPCG(1, 2)) // the same gaps for everyone
		for i := range n {
			time.Sleep(time.Duration(5+gaps.IntN(21)) * time.Millisecond) // the consumers go idle again
			if err := sys.Enqueue(ctx, 0, l.payload(i)); err != nil {
				return fmt.Errorf("enqueue: %w", err)
			}
			if err := l.waitFor(ctx, i); err != nil {
				return err
			}
		}
		if err := l.wait(ctx); err != nil {
			return err
		}
		if err := stopQueue(ctx, sys); err != nil {
			return err
		}
		recordLatency(r, l.latencies(0, n), false)
		l.check(r)
		return checkEmpty(ctx, r, sys)
	}
}

// startOneQueue builds a 1 queue x 10 system for n jobs plus a warm-up job
// (index n), starts it and waits for the warm-up job to run, so that the
// measured jobs find the consumers running.
func startOneQueue(ctx context.Context, r *Run, mk newQueueSystem, n int) (queueSystem, *ledger, error) {
	sys, err := mk(r.Redis.Addr(), queueShape{1, 10}, r)
	if err != nil {
		return nil, nil, err
	}
	l := newLedger(n + 1)
	if err := sys.Start(ctx, l.ran); err != nil {
		sys.Close()
		return nil, nil, fmt.Errorf("start: %w", err)
	}
	err = sys.Enqueue(ctx, 0, l.payload(n))
	if err == nil {
		err = l.waitFor(ctx, n)
	}
	if err != nil {
		sys.Close()
		return nil, nil, fmt.Errorf("warm-up job: %w", err)
	}
	return sys, l, nil
}

func recordLatency(r *Run, lat []time.Duration, p99 bool) {
	slices.Sort(lat)
	r.Record("p50 ms", Lower, ms(quantile(lat, 0.50)))
	if p99 {
		r.Record("p99 ms", Lower, ms(quantile(lat, 0.99)))
	}
	r.Record("max ms", Lower, ms(quantile(lat, 1)))
}

// idleWarmup lets start-up work (first heartbeats, consumer registration,
// the first round of BLMOVE timeouts) pass before the idle window opens.
const idleWarmup = blockTimeout + time.Second

// idleRun starts consumers with no jobs and counts the commands Redis
// processes per second over whole block-timeout cycles, and the
// connections open at the end.
func idleRun(mk newQueueSystem, sh queueShape) RunFunc {
	return func(ctx context.Context, r *Run) error {
		sys, err := mk(r.Redis.Addr(), sh, r)
		if err != nil {
			return err
		}
		defer sys.Close()
		l := newLedger(0)
		if err := sys.Start(ctx, l.ran); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		if err := sleep(ctx, idleWarmup); err != nil {
			return err
		}
		window := max(r.Sizes.IdleWindow.Truncate(blockTimeout), blockTimeout)
		c0, err := r.Redis.Calls(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		if err := sleep(ctx, window); err != nil {
			return err
		}
		c1, err := r.Redis.Calls(ctx)
		if err != nil {
			return err
		}
		elapsed := time.Since(start)
		conns, err := r.Redis.Clients(ctx)
		if err != nil {
			return err
		}
		if err := stopQueue(ctx, sys); err != nil {
			return err
		}
		r.Record("Redis commands/s", Lower, float64(c1-c0)/elapsed.Seconds())
		r.Record("connections", Lower, float64(conns))
		_, _, bad := l.tally()
		r.Check(bad == 0, "%d handler calls with no job enqueued", bad)
		return nil
	}
}

// sleep waits d or until ctx ends, and then says why.
func sleep(ctx context.Context, d time.Duration) error {
	if !backoff.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}
