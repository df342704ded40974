package main

import (
	"sync/atomic"
	"time"
)

// sojournInterval is how long every chat started must have waited over the
// target before the sojourn controller sheds, and how long it keeps shedding
// after the last such start (CoDel's interval).
const sojournInterval = 100 * time.Millisecond

// sojourn is a CoDel-style controller on the measured enqueue-to-start wait
// of the chats the workers start: when the minimum wait over an interval
// exceeds the target (every chat started for sojournInterval waited longer),
// the backlog is standing, not a burst, and new chats are shed until a chat
// starts within the target again, or no chat started over the target for an
// interval (the backlog is gone: nothing is left to start).
//
// It reacts to what the workers measured, so it also holds when the
// in-flight gate's local count is wrong (several instances on one Redis,
// chats started elsewhere). No timer: the state moves on observe and is read
// on shedding. Lock-free; safe for concurrent use.
type sojourn struct {
	target time.Duration
	// firstAbove is when the current run of starts over the target began
	// (unix ns), 0 while the last start was within it; lastAbove is the
	// last start over the target.
	firstAbove, lastAbove atomic.Int64
}

// observe records that a chat started at now after waiting wait; saturated
// says every chat handler was busy as it started. A chat that started with a
// handler free waited for the path through Redis (enqueue, the fetcher's
// wake-up, the fetch), not for a handler: it counts as within the target,
// however long that path took. On a real Redis the path alone often exceeds a
// sub-millisecond target, and counting it shed a lightly loaded service
// (CI's 200 chats/s smoke soak: 9 % refused).
func (c *sojourn) observe(wait time.Duration, saturated bool, now time.Time) {
	if wait <= c.target || !saturated {
		c.firstAbove.Store(0)
		return
	}
	ns := now.UnixNano()
	c.firstAbove.CompareAndSwap(0, ns)
	c.lastAbove.Store(ns)
}

// shedding reports whether new chats should be shed at now: the starts have
// stayed over the target for an interval, and the last of them is less than
// an interval old.
func (c *sojourn) shedding(now time.Time) bool {
	first, last := c.firstAbove.Load(), c.lastAbove.Load()
	if first == 0 || last-first < int64(sojournInterval) {
		return false
	}
	return now.UnixNano()-last < int64(sojournInterval)
}

// gate bounds the chats this process admitted and its chat workers have not
// started yet (in the HTTP handler, in Redis, or fetched): at most the free
// handlers plus slack, where slack is the wait target times the measured
// drain rate (Little's law: a chat admitted behind slack others waits about
// the target). Unlike a reading of Redis it is exact and current, so it
// holds a budget of a millisecond at thousands of arrivals a second.
//
// The count is this process's: chats it admitted that start on another
// instance are never counted off here, so the count is capped by what can
// be waiting at all, from the shedder's last reading of Redis (the chat
// backlog then, plus every chat admitted since the last request before it
// ended, plus the chats fetched and not running). Lock-free.
type gate struct {
	slots   int64
	busy    func() int64 // chat handlers running a job
	pending atomic.Int64 // admitted, not started, not refused
}

// admit counts one chat in when pending is under the free handlers plus
// slack; upper caps pending first (negative: no cap).
func (g *gate) admit(slack, upper int64) bool {
	busy := g.busy()
	limit := max(g.slots-busy, 0) + slack
	for {
		cur := g.pending.Load()
		p := cur
		if upper >= 0 && p > upper {
			p = upper // chats counted here started elsewhere
		}
		if p >= limit {
			if p == cur || g.pending.CompareAndSwap(cur, p) {
				return false
			}
			continue
		}
		if g.pending.CompareAndSwap(cur, p+1) {
			return true
		}
	}
}

// leave counts one chat out: started by a handler, or its request over
// without queueing it.
func (g *gate) leave() {
	for {
		p := g.pending.Load()
		if p <= 0 || g.pending.CompareAndSwap(p, p-1) {
			return
		}
	}
}
