package ratelimit

// The two things a Limiter keeps in process memory, both bounded expiring
// maps: what Redis said about denied keys, and FailLocal's buckets.

// deniedState is what Redis said about a denied key: its TAT-now was d units
// at the local instant at (taken before the call, so the entry can only end
// early, never late: see lookupDenied).
type deniedState struct{ at, d int64 }

// lookupDenied answers a call from the denied cache if key is known to be
// denied at now, with the RetryAfter, ResetAfter and Remaining Redis would
// give (exactly, when Config.Now is the clock of both).
//
// It never admits: an entry lives only while even one event would be denied,
// and only TAT moving forward (other calls, other processes) can change that
// in Redis, which makes the denial longer, not shorter. Its instant was taken
// before the script ran, so with Redis TIME the entry ends up to one round
// trip early and the next call asks Redis; it never outlives the denial.
func (l *Limiter) lookupDenied(key string, n, now int64) (Result, bool) {
	s := l.denied.shard(key)
	s.mu.Lock()
	it := s.get(key, now)
	if it == nil {
		s.mu.Unlock()
		return Result{}, false
	}
	e := it.val
	s.mu.Unlock()
	d := e.d
	if now > e.at {
		d -= (now - e.at) * l.g.scale // bounded: now is before the entry's end
	}
	return l.g.denial(d, n, SourceDeniedCache), true
}

// storeDenied remembers that key's TAT-now was d at the instant at, until
// one event could be admitted. A denial of n events that one event would
// pass (AllowN) is not stored.
func (l *Limiter) storeDenied(key string, at, d int64) {
	exp := at + ceilDiv(d+l.g.step-l.g.limit, l.g.scale)
	if exp <= at {
		return
	}
	s := l.denied.shard(key)
	s.mu.Lock()
	s.set(key, exp, deniedState{at: at, d: d}, at)
	s.mu.Unlock()
}

// localTAT is a FailLocal bucket: its TAT, us µs plus rem units.
type localTAT struct{ us, rem int64 }

// allowLocal is FailLocal's decision: the same GCRA as the script, on a
// bucket in process memory. A bucket is dropped once full again (its TAT
// passed), so only keys limited right now take room.
func (l *Limiter) allowLocal(key string, n, now int64) Result {
	s := l.local.shard(key)
	s.mu.Lock()
	var d int64
	if it := s.get(key, now); it != nil {
		d = l.g.excess(it.val.us, it.val.rem, now)
	}
	ok, nd := l.g.decide(d, n)
	if ok {
		us, rem := l.g.tat(now, nd)
		exp := us
		if rem > 0 {
			exp++
		}
		s.set(key, exp, localTAT{us: us, rem: rem}, now)
	}
	s.mu.Unlock()
	if ok {
		return l.g.admission(nd, SourceFallback)
	}
	return l.g.denial(d, n, SourceFallback)
}
