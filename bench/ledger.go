package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
)

// ledger counts the runs of every job of one run, to check exactly-once
// delivery, records each job's latency from enqueue to handler start, and
// says when every job has run at least once.
//
// A job's payload is 16 bytes: its index and the instant it was enqueued
// (time since the ledger was made, on the monotonic clock). Every
// implementation gets the same payloads. A ledger is safe for concurrent use.
type ledger struct {
	base     time.Time
	runs     []atomic.Int32
	lat      []atomic.Int64 // ns, written by the first run
	distinct atomic.Int64
	bad      atomic.Int64 // payloads that are no job of this ledger
	all      chan struct{}
	first    chan int // receives each job's index at its first run
}

func newLedger(n int) *ledger {
	l := &ledger{
		base:  time.Now(),
		runs:  make([]atomic.Int32, n),
		lat:   make([]atomic.Int64, n),
		all:   make(chan struct{}),
		first: make(chan int, n), // never blocks: one send per job
	}
	if n == 0 {
		close(l.all)
	}
	return l
}

// payload returns job i's payload stamped with the current instant.
func (l *ledger) payload(i int) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, uint64(i))
	binary.LittleEndian.PutUint64(b[8:], uint64(time.Since(l.base)))
	return b
}

// ran records a run of the job whose payload is p. It is the handler of
// every implementation.
func (l *ledger) ran(p []byte) {
	now := time.Since(l.base)
	if len(p) != 16 {
		l.bad.Add(1)
		return
	}
	i := binary.LittleEndian.Uint64(p)
	if i >= uint64(len(l.runs)) {
		l.bad.Add(1)
		return
	}
	if l.runs[i].Add(1) != 1 {
		return
	}
	l.lat[i].Store(int64(now) - int64(binary.LittleEndian.Uint64(p[8:])))
	l.first <- int(i)
	if l.distinct.Add(1) == int64(len(l.runs)) {
		close(l.all)
	}
}

// wait waits until every job has run, or fails when ctx ends first.
func (l *ledger) wait(ctx context.Context) error {
	select {
	case <-l.all:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("only %d of %d jobs ran: %w", l.distinct.Load(), len(l.runs), ctx.Err())
	}
}

// waitFor waits until job i has run.
func (l *ledger) waitFor(ctx context.Context, i int) error {
	for {
		select {
		case j := <-l.first:
			if j == i {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("job %d did not run: %w", i, ctx.Err())
		}
	}
}

// latencies returns the enqueue -> handler start latencies of jobs
// [from, to).
func (l *ledger) latencies(from, to int) []time.Duration {
	out := make([]time.Duration, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, time.Duration(l.lat[i].Load()))
	}
	return out
}

// tally returns the jobs that never ran, the jobs that ran more than once,
// and the payloads that were no job.
func (l *ledger) tally() (missing, repeated, bad int) {
	for i := range l.runs {
		switch n := l.runs[i].Load(); {
		case n == 0:
			missing++
		case n > 1:
			repeated++
		}
	}
	return missing, repeated, int(l.bad.Load())
}

// check records on r that every job ran exactly once.
func (l *ledger) check(r *Run) {
	missing, repeated, bad := l.tally()
	r.Check(missing == 0, "%d of %d jobs never ran", missing, len(l.runs))
	r.Check(repeated == 0, "%d of %d jobs ran more than once (no run failed, so at-least-once must mean once)", repeated, len(l.runs))
	r.Check(bad == 0, "%d handler calls got a payload that is no job of this run", bad)
}
