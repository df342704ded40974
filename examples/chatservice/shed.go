package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
)

// Shedding parameters that are not flags.
const (
	// shedRefresh is how old the shedder's reading of the backlog may get
	// before a request reads it again (one queue Stats per queue, through
	// the request lane). In between, the estimate moves by the chats this
	// process admitted and the drain rate, so a reading every 20ms is
	// enough to hold a budget of a few milliseconds.
	shedRefresh = 20 * time.Millisecond
	// rateWindow is the shortest span the drain rate is measured over.
	rateWindow = time.Second
	// shedHold is how long /healthz says "degraded" after the last shed.
	shedHold = 5 * time.Second
	// readTimeout bounds a backlog reading; a failed one keeps the last.
	readTimeout = 250 * time.Millisecond
	// maxDrainCredit is the most drain an estimate assumes since its
	// reading: while the next reading is late (Redis slow, the process
	// starved of CPU), the estimate must not drain the backlog on paper and
	// admit a burst. Measured: with the credit up to readTimeout, a 60s run
	// at 5x let the chat backlog reach 137 (a p99 wait of 335ms against a
	// budget of 4ms) on a starved machine.
	maxDrainCredit = 2 * shedRefresh
	// staleAfter is how old a reading may be before the shedder ignores it:
	// Redis is unreachable, and its errors answer the requests.
	staleAfter = 5 * time.Second
)

// backlogReading is what a shedder reads: each queue's ready and delayed
// jobs in Redis, and the chat workers' processed counter and busy handlers
// in this process.
type backlogReading struct {
	backlog     [chatapi.NumQueues]int64
	processed   uint64
	busy, slots int64 // chat handlers running a job, and their number
	fetched     int64 // chat jobs fetched and not running (in flight, not busy)
}

// saturated reports whether the chat workers had more work than handlers
// at the reading.
func (r backlogReading) saturated() bool {
	return r.backlog[0] > 0 || (r.slots > 0 && r.busy >= r.slots)
}

// shedder decides whether a chat may be accepted: not when a queue holds its
// MaxLen, nor when a chat accepted now would wait longer than the budget
// before a handler starts it. It estimates that wait as the chat queue's
// backlog over the recent drain rate of this process's chat workers.
//
// There is no timer: the first request after a reading is shedRefresh old
// reads again (others use the cached one meanwhile), and the drain rate is
// updated from the processed counter at those readings. Safe for concurrent
// use.
//
// The drain rate is this process's: with several instances on one Redis,
// each believes it drains the shared backlog alone and sheds early, which
// errs on the side of bounded latency.
type shedder struct {
	budget time.Duration // 0: no wait budget
	maxLen [chatapi.NumQueues]int64
	read   func(context.Context) (backlogReading, error)
	now    func() time.Time

	refresh sync.Mutex // held by the one request reading the backlog
	est     atomic.Pointer[estimate]
	// admitted counts the chats admitted since the service started, and
	// finished those whose request is over (queued or not). A reading of
	// Redis misses the chats admitted and not yet queued, so an estimate
	// adds every chat admitted since the last one finished before its
	// reading: those in flight then and those admitted after.
	admitted, finished atomic.Int64

	// gate and soj shed on the chats this process admitted and its workers
	// started (Config.WaitTarget); nil: off.
	gate   *gate
	soj    *sojourn
	target time.Duration

	overloaded, full atomic.Uint64
	lastShed         atomic.Int64 // unix ns
	lastReason       atomic.Pointer[string]

	// Guarded by refresh: the start of the current rate window, and how
	// many of its readings found the workers saturated.
	anchorAt           time.Time
	anchorProcessed    uint64
	readings, busyOnes int
}

// estimate is one reading and the rate known at the time.
type estimate struct {
	at       time.Time
	reading  backlogReading
	finished int64 // shedder.finished before the reading
	// rate is what the chat workers drain, jobs/s, when they have work:
	// measured over a window in which 90 % of the readings found them
	// saturated, else the most they drained in any window. 0: not known.
	rate float64
	// capacity is set once a saturated window measured the rate: until
	// then it is only what a light load asked of them, and a backlog of a
	// job would look like a long wait; the budget does not shed.
	capacity bool
}

func newShedder(budget time.Duration, maxLen [chatapi.NumQueues]int64, read func(context.Context) (backlogReading, error)) *shedder {
	return &shedder{budget: budget, maxLen: maxLen, read: read, now: time.Now}
}

// current returns the latest estimate, reading the backlog again when it is
// older than shedRefresh and no other request is reading it. Nil before the
// first successful reading.
func (s *shedder) current(ctx context.Context) *estimate {
	e := s.est.Load()
	now := s.now()
	if e != nil && now.Sub(e.at) < shedRefresh {
		return e
	}
	if !s.refresh.TryLock() {
		return e
	}
	defer s.refresh.Unlock()
	finished := s.finished.Load()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	r, err := s.read(ctx)
	cancel()
	if err != nil {
		return e // Redis trouble shows in /healthz; shed on what we knew
	}
	now = s.now()
	next := &estimate{at: now, reading: r, finished: finished}
	if e != nil {
		next.rate, next.capacity = e.rate, e.capacity
	}
	s.readings++
	if r.saturated() {
		s.busyOnes++
	}
	switch {
	case s.anchorAt.IsZero():
	case now.Sub(s.anchorAt) >= rateWindow:
		rate := float64(r.processed-s.anchorProcessed) / now.Sub(s.anchorAt).Seconds()
		if 10*s.busyOnes >= 9*s.readings {
			next.rate, next.capacity = rate, true // saturated: their capacity, up or down
		} else {
			// Idle at times: they drained what came, and can at least
			// this much. (Taken as the capacity, the rate of a light load
			// would make a backlog of one job look like a long wait.)
			next.rate = max(next.rate, rate)
		}
	default:
		s.est.Store(next)
		return next
	}
	s.anchorAt, s.anchorProcessed = now, r.processed
	s.readings, s.busyOnes = 1, 0 // the reading that begins the window
	if r.saturated() {
		s.busyOnes = 1
	}
	s.est.Store(next)
	return next
}

// backlog returns the estimated backlog of each queue at now: the reading,
// plus the chats admitted and not finished before it, less what the chat
// workers drained since. Chats admitted and refused later (429, Redis
// errors) count until the next reading: an overestimate, on the safe side.
func (e *estimate) backlog(now time.Time, admitted int64) [chatapi.NumQueues]int64 {
	b := e.reading.backlog
	since := float64(admitted-e.finished) - e.rate*min(now.Sub(e.at), maxDrainCredit).Seconds()
	b[0] = max(b[0]+int64(math.Round(since)), 0)
	return b
}

// wait returns the expected wait of a chat accepted now behind backlog
// chats; +Inf when the rate is not known yet and there is a backlog.
func (e *estimate) wait(backlog int64) time.Duration {
	switch {
	case backlog <= 0:
		return 0
	case e.rate <= 0:
		return time.Duration(math.MaxInt64)
	}
	return seconds(float64(backlog) / e.rate)
}

// seconds converts s to a Duration, saturating at the largest one (a float
// past it converts to a negative Duration, which would pass any budget).
func seconds(s float64) time.Duration {
	if s >= float64(math.MaxInt64)/float64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(s * float64(time.Second))
}

// decision is the shedder's answer for one request.
type decision struct {
	shed       bool
	code       string        // chatapi.CodeOverloaded or CodeQueueFull
	retryAfter time.Duration // when there will likely be room
	reason     string        // for the log and /healthz, not the client
}

// admit decides on one chat and counts it as admitted when it may go on.
func (s *shedder) admit(ctx context.Context) decision {
	e := s.current(ctx)
	now := s.now()
	if e == nil || now.Sub(e.at) > staleAfter {
		return s.admitLocal(nil, now)
	}
	b := e.backlog(now, s.admitted.Load())
	for i, name := range chatapi.Queues() {
		if lim := s.maxLen[i]; lim > 0 && b[i] >= lim {
			d := decision{shed: true, code: chatapi.CodeQueueFull,
				reason: fmt.Sprintf("queue %s holds about %d jobs, its limit is %d", name, b[i], lim)}
			if e.rate > 0 {
				d.retryAfter = seconds(float64(b[i]-lim+1) / e.rate)
			}
			s.shed(d)
			return d
		}
	}
	// A capacity not yet measured does not shed: at start, or under a light
	// load, the backlog alone says nothing about the wait. A capacity
	// measured as 0 (saturated workers draining nothing: a hung provider)
	// makes any backlog an endless wait.
	if s.budget > 0 && e.capacity {
		if w := e.wait(b[0]); w > s.budget {
			d := decision{shed: true, code: chatapi.CodeOverloaded, retryAfter: w - s.budget,
				reason: fmt.Sprintf("a chat would wait about %s for a handler (backlog %d at %.0f/s), over the budget of %s",
					w.Round(time.Millisecond), b[0], e.rate, s.budget)}
			s.shed(d)
			return d
		}
	}
	return s.admitLocal(e, now)
}

// admitLocal applies the sojourn controller and the in-flight gate, then
// counts the chat as admitted.
func (s *shedder) admitLocal(e *estimate, now time.Time) decision {
	if s.soj != nil && s.soj.shedding(now) {
		d := decision{shed: true, code: chatapi.CodeOverloaded, retryAfter: sojournInterval,
			reason: fmt.Sprintf("every chat started for %s waited over the target of %s for a handler", sojournInterval, s.target)}
		s.shed(d)
		return d
	}
	if s.gate != nil {
		var slack int64
		if e != nil && e.capacity {
			slack = int64(s.target.Seconds() * e.rate)
		}
		upper := int64(-1)
		if e != nil {
			// Not s.gate.slots for the fetched chats: once idle, that
			// bound equals the free handlers, and a count leaked to it
			// (chats started elsewhere) shed every chat for good.
			upper = e.reading.backlog[0] + s.admitted.Load() - e.finished + e.reading.fetched
		}
		if !s.gate.admit(slack, upper) {
			d := decision{shed: true, code: chatapi.CodeOverloaded, retryAfter: s.target,
				reason: fmt.Sprintf("every chat handler is busy and %d more chats are waiting for one (the wait target %s allows %d)",
					s.gate.pending.Load(), s.target, slack)}
			s.shed(d)
			return d
		}
	}
	s.admitted.Add(1)
	return decision{}
}

// started records that a chat admitted by some instance started on this
// process's chat workers after waiting wait.
// saturated says every chat handler was busy as it started.
func (s *shedder) started(wait time.Duration, saturated bool) {
	if s.soj != nil {
		s.soj.observe(wait, saturated, s.now())
	}
	if s.gate != nil {
		s.gate.leave()
	}
}

// notQueued records that an admitted chat's request ended without queueing
// it (429, a full queue, a Redis error).
func (s *shedder) notQueued() {
	if s.gate != nil {
		s.gate.leave()
	}
}

// shed records a shed: its count and reason for /healthz and /debug.
func (s *shedder) shed(d decision) {
	if d.code == chatapi.CodeQueueFull {
		s.full.Add(1)
	} else {
		s.overloaded.Add(1)
	}
	s.lastShed.Store(s.now().UnixNano())
	s.lastReason.Store(&d.reason)
}

// done records that an admitted chat's request is over.
func (s *shedder) done() { s.finished.Add(1) }

// shedding returns why the service shed within the last shedHold, or "".
func (s *shedder) shedding() string {
	ns := s.lastShed.Load()
	if ns == 0 || s.now().Sub(time.Unix(0, ns)) > shedHold {
		return ""
	}
	r := s.lastReason.Load()
	if r == nil {
		return ""
	}
	return fmt.Sprintf("shedding load (last %s ago): %s", s.now().Sub(time.Unix(0, ns)).Round(time.Millisecond), *r)
}

// stats reports the shedder for /debug/bounded.
func (s *shedder) stats() chatapi.Shed {
	st := chatapi.Shed{Enabled: true, WaitBudget: s.budget, MaxLen: s.maxLen,
		Overloaded: s.overloaded.Load(), Full: s.full.Load(), Shedding: s.shedding()}
	if e := s.est.Load(); e != nil {
		st.Backlog = e.backlog(s.now(), s.admitted.Load())
		st.DrainRate = e.rate
		if e.rate > 0 {
			st.ExpectedWait = e.wait(st.Backlog[0])
		}
	}
	return st
}

// maxRetryAfter caps a Retry-After: an estimate past it (a drain rate of
// nearly nothing) says "not soon", and a client told to come back in
// centuries never would.
const maxRetryAfter = time.Hour

// retryAfterSeconds renders d as a Retry-After value (RFC 9110: a
// non-negative integer of seconds): whole seconds, rounded up, at least 1,
// at most maxRetryAfter.
func retryAfterSeconds(d time.Duration) string {
	d = min(max(d, time.Second), maxRetryAfter) // before rounding: d+1s-1 overflows near MaxInt64
	return fmt.Sprint(int64((d + time.Second - 1) / time.Second))
}
