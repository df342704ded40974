package ratelimit

import "math/bits"

// The two things a Limiter keeps in process memory, both bounded expiring
// maps: what Redis said about denied keys, and FailLocal's buckets.

// deniedState is what Redis said about a denied key: window slot's TAT-now
// was d units of g at the local instant at (taken before the call, so the
// entry can only end early, never late: see lookupDenied).
type deniedState struct {
	at, d int64
	g     gcra
	slot  int
}

// lookupDenied answers a call from the denied cache if key is known to be
// denied at now under ws, with the RetryAfter, ResetAfter and Remaining
// Redis would give (exactly, when Config.Now is the clock of both, and the
// call has one window).
//
// It never admits: an entry lives only while even one event would be denied,
// and only TAT moving forward (other calls, other processes) can change that
// in Redis, which makes the denial longer, not shorter. Its instant was taken
// before the script ran, so with Redis TIME the entry ends up to one round
// trip early and the next call asks Redis; it never outlives the denial. It
// answers only a call with the very limit that was denied at the same
// position (the same state): a key's limit given per call may change.
func (l *Limiter) lookupDenied(key string, n, now int64, ws *windows) (Result, bool) {
	s := l.denied.shard(key)
	s.mu.Lock()
	it := s.get(key, now)
	if it == nil {
		s.mu.Unlock()
		return Result{}, false
	}
	e := it.val
	s.mu.Unlock()
	if e.slot >= ws.n || ws.g[e.slot] != e.g {
		return Result{}, false
	}
	d := e.d
	if now > e.at {
		d -= (now - e.at) * e.g.scale // bounded: now is before the entry's end
	}
	r := e.g.denial(d, n, SourceDeniedCache)
	r.Window = e.slot
	return r, true
}

// storeDenied remembers that key was denied at the instant at, when its
// windows' TAT-now were d, until one event could be admitted: it keeps the
// window that denies one event longest. A denial of n events that one event
// would pass (AllowN) is not stored.
func (l *Limiter) storeDenied(key string, at int64, ws *windows, d *[MaxWindows]int64) {
	exp, slot := at, -1
	for i := range ws.n {
		g := ws.g[i]
		if e := at + ceilDiv(d[i]+g.step-g.limit, g.scale); e > exp {
			exp, slot = e, i
		}
	}
	if slot < 0 {
		return
	}
	s := l.denied.shard(key)
	s.mu.Lock()
	s.set(key, exp, deniedState{at: at, d: d[slot], g: ws.g[slot], slot: slot}, at)
	s.mu.Unlock()
}

// localTAT is a FailLocal bucket: its TAT, us µs plus rem units.
type localTAT struct{ us, rem int64 }

// localState is FailLocal's state of one key: the TAT of each window
// position, rem in units of 1/scale µs (scale 0: no state), so that a limit
// given per call reads the instant whatever its units, as the script does.
type localState struct {
	tat   [MaxWindows]localTAT
	scale [MaxWindows]int64
}

// excess returns window i's TAT-now in g's units, its fraction of a µs
// rounded up to them (so a changed limit may deny a unit early, never admit
// early).
func (st *localState) excess(i int, g gcra, now int64) int64 {
	t, sc := st.tat[i], st.scale[i]
	if sc == 0 {
		return 0
	}
	if sc != g.scale && t.rem > 0 {
		// rem*g.scale/sc, rounded up; rem < sc, so the quotient fits.
		hi, lo := bits.Mul64(uint64(t.rem), uint64(g.scale))
		q, r := bits.Div64(hi, lo, uint64(sc))
		if r > 0 {
			q++
		}
		t.rem = int64(q)
		if t.rem >= g.scale {
			t.us, t.rem = t.us+1, t.rem-g.scale
		}
	}
	return g.excess(t.us, t.rem, now)
}

// allowLocal is FailLocal's decision: the same GCRA as the script, every
// window of a call at once, on one bucket per key in process memory. A
// bucket is dropped once full again in every window (its last TAT passed),
// so only keys limited right now take room.
func (l *Limiter) allowLocal(key string, n, now int64, ws *windows) Result {
	s := l.local.shard(key)
	s.mu.Lock()
	var st localState
	if it := s.get(key, now); it != nil {
		st = it.val
	}
	var d [MaxWindows]int64
	ok := true
	for i := range ws.n {
		d[i] = st.excess(i, ws.g[i], now)
		if fits, _ := ws.g[i].decide(d[i], n); !fits {
			ok = false
		}
	}
	if ok {
		for i := range ws.n {
			g := ws.g[i]
			us, rem := g.tat(now, d[i]+n*g.step)
			st.tat[i], st.scale[i] = localTAT{us: us, rem: rem}, g.scale
		}
		var exp int64
		for i := range st.tat {
			if st.scale[i] == 0 {
				continue
			}
			e := st.tat[i].us
			if st.tat[i].rem > 0 {
				e++
			}
			exp = max(exp, e)
		}
		s.set(key, exp, st, now)
	}
	s.mu.Unlock()
	return ws.result(&d, n, SourceFallback)
}
