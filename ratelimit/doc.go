// Package ratelimit limits events per key across processes with GCRA in
// Redis, answers keys it knows are denied without Redis, and has an explicit
// policy for when Redis is down.
//
//	api, err := ratelimit.New(p, "api", ratelimit.Config{Rate: 100, Period: time.Minute, Burst: 20})
//	...
//	r, err := api.Allow(ctx, userID) // r.Allowed, r.Remaining, r.RetryAfter, r.ResetAfter
//	http.Handle("/", api.Middleware(keyOf, handler))
//
// # Model
//
// A [Limiter] admits Rate events per Period per key, in bursts of up to
// Burst, by GCRA (a token bucket told as a schedule). Each active key is one
// Redis string, {rl:<name>}:<key>, holding the instant its bucket is full
// again; one Lua script reads it and, on admission, writes it with a PX
// that makes it vanish when it stops saying anything. Limiters with the same
// name on the same Redis share state across processes, and a changed limit
// under the same name takes effect at once. The arithmetic is exact in
// integers (Config.Period is a whole number of µs). Every key of a limiter
// carries the same hash tag, so it runs unchanged on Redis Cluster. The
// clock is Redis's TIME unless Config.Now is set.
//
// A key Redis has denied is remembered in a bounded local cache until one
// event could pass and answered without Redis meanwhile
// ([SourceDeniedCache]); the cache only ever denies. While the pool reports
// Redis down, and when a call fails or runs out Config.Timeout (which counts
// toward marking Redis down in the pool), Config.OnRedisError answers
// ([SourceFallback]): [FailLocal], the default, runs the same GCRA in process
// memory (N processes then admit up to N times the limit), [FailOpen] admits
// and [FailClosed] denies.
//
// [Limiter.AllowLimits] takes the limits with the call ([Limit], [PerSecond],
// [PerDay], ...) instead of from Config, for quotas per plan on one
// Limiter, and up to [MaxWindows] of them at once, all or none in one
// script, the most restrictive reporting (Result.Window). [Limiter.Reset]
// forgets a key. [Limiter.Middleware] and [Limiter.Handler] (with options)
// limit an http.Handler by a key function; a key of "" exempts a request.
// contrib/grpc, a module of its own, has gRPC interceptors.
//
// # Semaphore
//
// A [Semaphore] bounds how many holders a key has at once across a fleet.
// Each key's slots are leases in one sorted set, scored by their end; one
// script drops the ended ones and admits below SemaphoreConfig.Limit, so a
// holder that dies frees its slot LeaseTTL after its last renewal.
// [Semaphore.Acquire] waits without polling (releases publish, one timer
// wakes a waiter at the earliest lease end) and returns a release func that
// is safe to call twice; [Semaphore.TryAcquire] does not wait. Without
// Redis it fails closed ([ErrSemaphoreUnavailable]). [Semaphore.Start]
// gives its renewal timer, wait timer and subscriber (one reserved
// blocking-lane connection) to a lifecycle group, whose closing stops them.
//
// # Zero value, concurrency, closing
//
// The zero Limiter is not usable: build one with [New], which does not touch
// Redis. A Limiter is safe for concurrent use. It starts no goroutine and
// holds nothing to close: its connections are the [pool.Pool]'s, which the
// pool's owner closes after the Limiter's last use, and its local caches
// have fixed capacities (Config.DeniedKeys, Config.LocalKeys) and no timer.
//
// # Errors
//
// New's errors wrap [ErrInvalidConfig] and name the field or the name at
// fault, and so do Handler's. A call returns an error only for bad
// arguments ([ErrInvalidArgument], naming the limit and field at fault), a
// closed pool, or the caller's context ending
// before Redis answers (matching ctx.Err(): context.DeadlineExceeded for a
// deadline); a failed Redis call is the policy's answer, with Result.Err
// saying why. [Limiter.Wait] returns at once with an error matching
// context.DeadlineExceeded when the wait would reach ctx's deadline.
//
// The reasoning, the measurements and the tests behind each part are in
// docs/ratelimit.md.
package ratelimit
