// Package pool is the Redis connection budget of a process: a Pool splits a
// fixed number of connections into lanes, so that no kind of work can take
// the connections another needs.
//
// # Lanes
//
// Each lane is a go-redis client behind a gate of its own size:
//
//   - the request lane (Pool.Client): short commands on the request path;
//   - the background lane (Pool.Background): components' bookkeeping off the
//     request path (acks, scheduling, heartbeats);
//   - the blocking lane, handed out only in reservations
//     (Pool.ReserveBlocking) made when a component is built. A reservation
//     serves either commands or subscriptions; asking for more than the lane
//     has left fails at once with ErrOverBudget.
//
// At most Size commands run on a lane at once and at most Size sockets are
// open (on Redis Cluster, per node). A caller that finds its lane full waits
// at most the lane's MaxWait and its own context; past MaxWaiters it is
// refused at once. A command runs at most once per call: go-redis's retries
// are off. The request and background lanes refuse, before they reach
// Redis, blocking commands (BLMOVE, XREAD BLOCK, WAIT 0, ...; WAIT and
// WAITAOF with a timeout under ReadTimeout are allowed) and SUBSCRIBE,
// PSUBSCRIBE, SSUBSCRIBE and MONITOR, which would leave a pooled
// connection in subscribe or monitor mode (use Reservation.Subscribe).
// No lane sends CLIENT PAUSE, or a SELECT, AUTH, HELLO or CLIENT SETNAME of
// other than the pool's own DB, credentials, RESP3 and lane name (a pooled
// connection would keep it): ErrRefusedCommand. Config.Hooks and Instrument
// (redisotel) reach every client, outside the lane: they see refusals too.
// Sockets per Redis server: Request.Size + Background.Size + Blocking.Size.
//
// # Health
//
// The outcome of every command feeds a circuit breaker; nothing polls.
// After Config.FailureThreshold connection failures in a row, or one refused
// password, Redis is marked down: request-lane calls fail at once with
// ErrUnavailable except one probe per Config.ProbeInterval, and the first
// success marks it up. Admit and AdmitContext tell a component before it
// sends (ratelimit uses AdmitContext); WithTimeout marks a component's own
// bound on a call, whose expiry counts toward marking Redis down.
//
// # Zero value, concurrency, ownership
//
// A Pool has no useful zero value: build it with New, which does not
// connect. Pools, their clients and Reservations are safe for concurrent
// use. The service builds one Pool per process, passes it to every
// component and closes it after they have stopped (register Close first on
// the lifecycle group, so it runs last); Close releases what is left. A
// component Releases its Reservation and Closes its Subscriptions; nobody
// closes the clients, which belong to the pool. Claim holds a name for what
// must run once per pool (a queue consumer ID), so components need no
// process-wide registry. A Pool starts no goroutine
// of its own; go-redis's end when Close returns or shortly after.
//
// # Errors
//
// New fails only on configuration: every such error wraps ErrInvalidConfig
// and names the field. Calls fail with a *LaneError (ErrLaneExhausted, and
// the context error or context.DeadlineExceeded when a wait ran out),
// ErrUnavailable, ErrBlockingCommand, ErrRefusedCommand, ErrReservationUse
// or ErrClosed; one that ran out its caller's deadline matches
// context.DeadlineExceeded.
//
// Why the lanes exist, Redis Cluster and Sentinel, and the tests and figures
// behind each claim: docs/pool.md in the repository.
package pool
