// Package ratelimit limits events per key across processes with GCRA in
// Redis, answers keys it knows are limited without Redis, and has an explicit
// policy for when Redis is down.
//
// The service this library was written after ran its rate limiter on a
// cleanup timer and took two or three connections from a starved shared pool.
// Here a [Limiter] starts nothing: its state expires in Redis on its own, its
// local caches have fixed capacities and no timer, and it draws its
// connections from the request lane of the [pool.Pool] it is given.
//
//	p, _ := pool.New(pool.Config{URL: "redis://..."})
//	api, err := ratelimit.New(p, "api", ratelimit.Config{Rate: 100, Period: time.Minute, Burst: 20})
//	...
//	r, err := api.Allow(ctx, userID) // r.Allowed, r.Remaining, r.RetryAfter, r.ResetAfter
//	http.Handle("/", api.Middleware(keyOf, handler))
//
// # The algorithm
//
// GCRA (the generic cell rate algorithm, a token bucket told as a schedule)
// keeps one number per key, the theoretical arrival time TAT: the instant the
// key's bucket will be full again. A call for n events at now is admitted
// when max(TAT, now) + n*T - now is at most Burst*T, T being the emission
// interval Period/Rate, and then moves TAT there. One string key per active key, 70-110 bytes
// by MEMORY USAGE, against about 92 KB for a sliding-window log of 1,000
// requests. The key is written with PX set to TAT-now, so it vanishes
// exactly when it stops saying anything: there is no cleanup task, and idle
// keys cost nothing. A denial writes nothing.
//
// All of it is one Lua script (script.go) with one GET and, on admission,
// one SET: about 6 µs of Redis CPU per admission and 4 µs per denial on
// Redis 7 (INFO commandstats usec_per_call, against 0.15 µs for a GET in the
// same run, and 7-8 µs for go-redis/redis_rate measured beside it by the
// bench module): the script alone would let one Redis core serve about
// 160,000 calls a second. BenchmarkAllow measures it.
//
// # Exact arithmetic
//
// Time is counted in integer units of 1/scale µs chosen so that T is a whole
// number of units (see gcra.go): 7 events per 90 s are exact, so a burst of
// 10 admits exactly 10, Remaining is exact at every step, and a long run of
// calls never drifts, where float state under-reports Remaining (8 where 9
// remain) and integer-µs state loses up to a microsecond per event. Only
// TAT-now, at most a burst's span, is scaled, so every value stays below
// 2^53, which Lua numbers hold exactly. Config.Period must be a whole number
// of µs. When Burst*T in units would not fit (a burst of a million at a rate
// with no common factor with the period), T is rounded up to whole µs
// instead and New logs it; a burst spanning more than 142 years is refused.
//
// The state is an instant: whole µs and an exact fraction of a µs stored
// with its denominator, so it reads the same under any Rate, Period or
// Burst. A new limit deployed under the same name takes effect at once, with
// no reset and no migration, and while old and new processes share the keys
// each call is decided exactly as GCRA decides it on that instant with the
// caller's limit. The denominator is the least common multiple of the units
// of the limits that wrote the state; should it pass 2^52 (two prime rates
// near a billion per hour), the fraction is rounded up by under a µs, which
// can deny a call at that boundary, never admit one. Processes still on the
// version before this format, with the writer's limit, read it too while a
// deploy rolls out: they decide as GCRA does, except that a call landing
// exactly on the boundary may be denied, never admitted early.
//
// # Keys
//
// A limiter named name keeps key's state at {rl:<name>}:<key>; the hash tag
// is the same for all its keys and the script receives its key in KEYS, so it
// runs unchanged on Redis Cluster. The name must not contain braces; keys
// may hold anything.
//
// # The clock
//
// By default the script reads Redis's TIME: every process agrees on one
// clock, whatever their own clocks say (Redis 5 and later replicate a
// script's effects, so TIME is allowed before a write). Config.Now, when
// set, is passed to the script instead, and the local caches use it too,
// for tests with fixed instants. The state's expiry (PX, the ResetAfter of
// the admission that wrote it) still runs on Redis's clock, so on a real
// server a clock held still is exact only while each key is used again
// within that much real time; miniredis's TTLs run down only when the test
// says (see Config.Now). Local caches otherwise use the monotonic clock;
// they only ever count durations Redis gave them.
//
// # The denied cache
//
// A key Redis has denied is remembered, in a bounded map, until one event
// could pass (its RetryAfter for one event), and answered locally meanwhile
// with the RetryAfter, ResetAfter and Remaining Redis would give
// ([SourceDeniedCache]): exactly on a shared clock (Config.Now), up to a
// round trip less with Redis TIME. An abusive client hammering a limited key therefore
// costs Redis one script per RetryAfter instead of one per request: about
// 140 ns per call against 13 µs for the script (BenchmarkHotDeniedKey). The
// cache only ever denies, and only while Redis would deny too: TAT can only
// move later, and the entry's instant is taken before the script runs, so
// with Redis TIME an entry may end a round trip early (Redis is asked a
// little sooner), never late. Past Config.DeniedKeys, the entry closest to
// its end is dropped first. Config.NoDeniedCache turns it off.
//
// # When Redis is down
//
// The pool's health is the signal: while it reports Redis down, a call does
// not go near the network; Config.OnRedisError answers at once, in 160-250
// ns with no allocation ([SourceFallback], Result.Err saying why;
// BenchmarkRedisDown). A call that fails on the wire (refused, reset, timed
// out, lane exhausted, a script error), or gets no answer within
// Config.Timeout (250ms by default), gets the policy's answer too, with its
// error. Running out Config.Timeout counts toward marking Redis down in the
// pool, as a connection failure does, so a Redis too slow to use soon makes
// calls fail fast instead of each waiting the Timeout. Only the caller's own
// context ending, or its deadline passing, before Redis answers returns an
// error (matching ctx.Err(): context.DeadlineExceeded for a deadline), every
// time, and says nothing about Redis. The policies:
//
//   - [FailLocal], the default: the same GCRA in process memory per key, for
//     at most Config.LocalKeys keys (the fullest bucket is forgotten first).
//     Each process limits on its own, so N processes admit up to N times the
//     limit while Redis is away.
//   - [FailOpen]: admit everything.
//   - [FailClosed]: deny everything, RetryAfter being the time n events take.
//
// Keys in the denied cache stay denied whatever the policy. When Redis
// returns, the pool's probe (one call per pool.Config.ProbeInterval) goes
// through and Redis decides again; the local buckets are not carried over.
//
// # Waiting
//
// [Limiter.Wait] sleeps until a key admits an event, and returns at once
// with an error matching context.DeadlineExceeded when the wait would reach
// the context's deadline, instead of sleeping until the deadline to fail.
//
// # HTTP
//
// [Limiter.Middleware] limits an http.Handler by a key function, answers 429
// with Retry-After, and sets RateLimit-Limit, RateLimit-Remaining and
// RateLimit-Reset on every limited response. A key of "" exempts a request.
package ratelimit
