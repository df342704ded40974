// Package cache is a two-tier typed cache: a bounded local tier in front of
// Redis, loads that run once per key across every instance, and invalidation
// of the other instances' local copies.
//
//	users, err := cache.New[User](p, "users", cache.Config[User]{TTL: 10 * time.Minute})
//	...
//	err = users.Start(group) // the invalidation subscriber, owned by group
//	u, err := users.GetOrLoad(ctx, id, func(ctx context.Context) (User, error) {
//		return db.User(ctx, id) // cache.ErrNotFound for a missing user
//	})
//
// Redis holds the values: key k of the cache named name is {c:<name>}:k:<k>,
// its load lock {c:<name>}:l:<k>, its invalidations go to {c:<name>}:inval.
// All carry the cache's hash tag, so a cache lives in one Redis Cluster
// slot, and caches with the same name in different processes are one cache.
//
// The local tier holds copies as V, bounded by Config.MaxEntries and
// Config.MaxBytes at every moment (S3-FIFO eviction, lazy expiry, no timer).
// A copy lives at most Config.LocalTTL and never past its Redis TTL. Values
// are shared, not copied: a V holding pointers, slices or maps must be
// treated as read-only by everyone who gets it.
//
// GetOrLoad calls its loader once per key per process and, with the
// cross-instance lock (unless Config.NoLock), once per key across instances;
// the others wait for its value. The load runs on a context of its own (the
// first caller's values, bounded by Config.LoadTimeout), so a caller that
// gives up cancels neither the load nor its Redis write; each caller leaves
// when its own ctx ends. A Set or Delete made while a load runs wins over
// it. At most Config.MaxLoads loads run or wait at once; past that a miss
// fails at once with ErrTooManyLoads.
//
// With Config.RefreshAfter, a GetOrLoad that finds a value due returns it
// at once and one refresh runs across the instances, on refreshers Start
// hands to the group; a failed refresh leaves the value to serve until its
// TTL. GetOrLoadTTL's loader returns the value's TTL. GetMany,
// GetOrLoadMany (one loader call for every missing key) and SetMany take up
// to MaxBulkKeys keys in one Redis round trip each way.
//
// Set, Delete and a load's write publish an invalidation in the same round
// trip; the other instances' subscribers drop their copies. Pub/Sub can lose
// a message: LocalTTL bounds the staleness then, and a subscriber flushes its
// local tier whenever it (re)subscribes.
//
// Set and GetOrLoad take Tags("user:42"): InvalidateTag(ctx, "user:42")
// then removes every key written with that tag, from Redis and from every
// local tier. A tag holds at most Config.MaxTagMembers keys (past that the
// one expiring first is evicted and deleted) and expires with its keys.
// With Config.TrackRawWrites the subscriber also hears of values other
// programs write (Redis client-side-caching invalidations, CLIENT TRACKING
// BCAST), where Redis offers it.
//
// While Redis is down calls fail fast with pool.ErrUnavailable (the pool's
// request lane), a local hit still serves, and GetOrLoad on a miss loads and
// keeps the value in the local tier only. Nothing needs restarting when Redis
// returns.
//
// A Cache has no useful zero value: New builds it, and fails only on bad
// input (errors matching ErrInvalidConfig). It is safe for concurrent use.
// Start hands its background work to a lifecycle group: the subscriber, on
// one connection reserved in the pool's blocking lane, and a closer that
// cancels the loads in flight and waits for them. Closing that group closes
// the cache: every call then fails with ErrClosed. The pool belongs to the
// caller.
//
// Errors wrap the sentinels ErrNotFound, ErrInvalid, ErrValueTooLarge
// (*TooLargeError), ErrCodec, ErrTooManyLoads, ErrAlreadyStarted, ErrClosed
// and ErrInvalidConfig, and pool and context errors as they are: test with
// errors.Is.
//
// The design, why the local tier is not otter, the measured figures and the
// tests behind them: docs/cache.md.
package cache
