// Package cache is a two-tier typed cache: a bounded local tier in front of
// Redis, loads that run once per key across every instance, and invalidation
// of the other instances' local copies.
//
// The post-mortem's cache service ran its own cleanup timer, shared the
// starved connection pool and held data without bound. Here the local tier
// is bounded by entries and bytes at all times and has no timer; Redis calls
// go through the pool's request lane and fail fast while Redis is down; the
// one background task (the invalidation subscriber) belongs to a lifecycle
// group and holds one connection reserved in the pool's blocking lane.
//
//	users, err := cache.New[User](p, "users", cache.Config[User]{TTL: 10 * time.Minute})
//	...
//	err = users.Start(group) // the invalidation subscriber, owned by group
//	u, err := users.GetOrLoad(ctx, id, func(ctx context.Context) (User, error) {
//		return db.User(ctx, id) // cache.ErrNotFound for a missing user
//	})
//
// # Keys
//
// Every key of a cache carries the cache's hash tag: the value of key k is
// {c:<name>}:k:<k>, its load lock {c:<name>}:l:<k>, and invalidations go to
// the channel {c:<name>}:inval. So one cache lives in one Redis Cluster
// slot, its scripts get all their keys in KEYS, and caches with the same
// name in different processes are the same cache. Invalidations are
// published through the master of that slot too (PUBLISH is routed by its
// channel, as if it were a key), so on a Redis Cluster one cache's traffic
// goes to one master; the cluster forwards the messages to subscribers on
// every node, and each subscriber connects to the cache's master.
//
// # The local tier
//
// The local tier holds values as V (a hit decodes nothing and allocates
// nothing: about 70 ns on the machine it was written on), bounded by
// Config.MaxEntries and Config.MaxBytes, where an entry weighs its key plus
// its encoded value. Both bounds hold at every moment, not after some later
// maintenance: the tier is split into shards and each shard evicts under its
// own lock, before the write that would exceed its share returns.
//
// Eviction is S3-FIFO: a new key enters a small queue (a tenth of the tier);
// if it is read again before it reaches the head it moves to the main queue,
// otherwise it leaves and its hash is remembered for a while, so that a key
// that comes back soon goes straight to main. The main queue gives each
// entry as many second chances as it had reads, up to three. One-hit
// wonders (a scan) pass through the small queue without pushing out the
// keys that are read again. Expiry is lazy: an expired entry is removed when
// it is read or reaches the head of its queue, and counts toward the bounds
// until then. Nothing runs in the background.
//
// The tier is hand-written rather than taken from otter v2. Otter's bare
// lookup is faster (37 ns against this tier's 70), but with the expiry check
// and hit count a tier needs it measured 93 ns in the same run
// (cache/internal/localbench), and otter bounds entries or weight but not
// both, lets its size run past its bound while writers race its buffered
// maintenance (twice its MaximumSize under four writers), and starts
// goroutines nobody owns (one per maintenance drain with its default
// executor, a clean-up goroutine as soon as entries expire).
//
// Values are shared, not copied: a V holding pointers, slices or maps must
// be treated as read-only by everyone who gets it.
//
// # The Redis tier
//
// A value is stored as one kind byte and the codec's bytes (JSON by default;
// []byte and string are stored raw), with a TTL in whole milliseconds (PX):
// 250ms stays 250ms. Config.TTLJitter shortens TTLs by a random fraction so
// keys written together do not expire together. With Config.NegativeTTL, a
// loader's ErrNotFound is stored too (as the kind byte alone), so a missing
// key does not reach the loader on every call. A value the codec cannot
// encode, or larger than Config.MaxValueBytes, fails before anything is
// written. A value in Redis the codec cannot decode (written with another V,
// say, before a deploy) is deleted where it is found: GetOrLoad loads the
// key as a miss, Get returns ErrCodec once, and Stats.DecodeErrors counts
// them.
//
// # Loads and stampedes
//
// GetOrLoad calls its loader once per key per process (x/sync/singleflight)
// and, with the cross-instance lock, once per key across all instances: the
// instance that misses first takes the lock (SET NX PX, in the same script
// that found the value missing), loads, and in one script writes the value,
// releases the lock and publishes a note on the cache's channel. The other
// instances wait for the note, and check Redis again after a backoff (5ms
// doubling to 500ms, never past the lock's expiry) in case it is lost, so
// there is no hot polling. If the holder dies its lock expires
// (Config.LockTTL) and a waiter takes over; if its loader fails it releases
// the lock at once and a waiter loads.
//
// A Set or Delete that lands while a load runs wins over the load, whose
// loader may have read the data before the change they are about: they
// delete the key's load lock, and the script that writes a loaded value
// writes it only while the lock is still its own. With Config.NoLock a
// loaded value is written only if the key is still missing, so a racing Set
// still wins but a racing Delete does not. A load that could not ask Redis
// for the lock (the read or the lock check failed, pool.ErrLaneExhausted
// included) writes nothing to Redis: it keeps its value (or, with
// NegativeTTL, its not-found answer) in the local tier only, bounded by
// LocalTTL and the invalidations, so a Delete made while it ran is not
// undone. A loaded value a Set or Delete kept out of Redis is returned to
// the callers but not kept.
//
// Every caller waits with its own context and leaves when it ends, with an
// error matching its context's. The load itself runs on a context of its own
// (the first caller's values, Config.LoadTimeout) in singleflight's
// goroutine, so one caller giving up cancels neither the others nor the
// load, and the loaded value is still written to Redis. Those goroutines
// (one per key at a time, shared by its callers) can outlive their callers,
// and are bounded in time and in number:
//
//   - Each ends within LockTTL+LoadTimeout, plus up to 5s for the Redis
//     write after its loader returns.
//   - At most Config.MaxLoads (default 64) wait for another instance's load
//     or run a loader at once. A GetOrLoad that would start one more fails
//     at once with ErrTooManyLoads and calls no loader (Stats.LoadsRefused
//     counts them); a value found in Redis still serves.
//   - Before that point a flight is reading Redis: it holds or waits for a
//     connection of the pool's request lane, so the lane's size and its
//     waiter limit bound those (past them the read fails at once with
//     pool.ErrLaneExhausted, and the flight then needs a load slot like
//     any other load without Redis, and keeps what it loads locally only).
//
// The group the cache was started on cancels them when it closes and waits
// for them; their callers get ErrClosed.
//
// # Invalidation and consistency
//
// Redis holds the value; the local tiers hold copies. Set, Delete and a load
// write Redis and publish an invalidation in the same round trip; every other
// instance whose subscriber runs drops its copy of those keys when the
// message arrives (messages carry the sender's id, and a sender ignores its
// own). Until it arrives another instance may still serve the old value:
// that is the staleness of a working system, the Pub/Sub delivery delay.
//
// Pub/Sub delivers at most once, so a message can be lost: while a
// subscriber is reconnecting, during a failover, on a client output buffer
// overflow. Two things bound what a lost message can cost:
//
//   - Config.LocalTTL: no local entry lives longer (default one minute), nor
//     past its Redis TTL. This is the bound on staleness when messages are
//     lost, and without Start it is the only one.
//   - The subscriber flushes the local tier whenever it subscribes or
//     resubscribes, since whatever was published while it was away is gone.
//     A connection that stops answering (no message and no reply to a PING
//     within two Config.PingInterval) is replaced and flushed too, and a
//     subscription Redis does not confirm within one PingInterval is tried
//     again.
//
// Within an instance, a value read from Redis is stored locally only if no
// write or invalidation touched its shard of the tier since the read began,
// so a read that raced a Set or an invalidation cannot put the old value
// back. Two instances setting one key at once leave Redis with the last
// write, and each drops its own copy when the other's message arrives.
//
// Messages are bounded: a Delete of many keys is split into messages of at
// most 16 KiB. Keys are at most MaxKeyBytes (8 KiB), so every key fits in
// one: no caller can make every instance flush its local tier by choosing a
// long key.
//
// # Redis down
//
// Calls do not wait for a dead Redis: the pool's request lane fails them in
// microseconds with pool.ErrUnavailable while Redis is marked down (one call
// per probe interval tries it). A local hit still serves; Get on a miss
// returns the error; GetOrLoad on a miss calls the loader (still once per key
// per process), keeps the value (or, with NegativeTTL, its ErrNotFound)
// locally and returns it. The cache relies on the lane's own check rather
// than calling pool.Admit first.
//
// Nothing needs restarting when Redis returns: calls go through again after
// the pool's next successful probe, and the subscriber, which retries at
// least once a second, subscribes again (and flushes the local tier, as
// after any reconnect). TestRedisRestartMidRun_Server measures it: a miss
// fails in 1.5-3 µs during the outage; afterwards calls answer within
// milliseconds and subscribers listen again within a second. A restarted
// Redis Cluster master refuses commands for its first two seconds
// (CLUSTERDOWN), so there calls come back after about two seconds
// (TestCluster/RestartMidRun).
//
// # Background work and Redis traffic
//
// Without Start, a Cache runs no task of its own, but a GetOrLoad whose
// caller gives up leaves its load (loader and Redis write) running to its
// end, at most LockTTL+LoadTimeout, with no group to cancel or wait for it:
// a service starts its caches. Start adds one lifecycle task (the
// subscriber, on one reserved blocking-lane connection, so a pool without
// room fails Start with pool.ErrOverBudget) and a closer that cancels and
// waits for loads in flight. When that group closes the cache is closed:
// Get, GetOrLoad, Set and Delete fail at once with ErrClosed, a local hit
// included, and touch no tier. An idle cache sends one PING per
// PingInterval (30s) on the subscriber's connection and nothing else.
package cache
