// Package pool is the Redis connection budget of a process.
//
// The service this library was written after shared one pool of 20
// connections between everything: queue pollers, caches, rate limiters,
// health checks and user requests. Blocking consumers held the connections,
// 282 callers queued behind them, and Redis latency rose to 2.7 s without a
// single error saying why. A plain go-redis client reproduces it: 30
// goroutines blocking in BLMOVE next to 20 GET loops on a PoolSize of 20 cut
// GETs from ~45,000/s to ~21/s with a median of one second.
//
// A Pool makes that impossible by construction. It splits the budget into
// lanes, each a go-redis client behind a gate of its own size:
//
//   - the request lane (Client) for short commands on the request path;
//   - the background lane (Background) for components' bookkeeping off the
//     request path (queue acks, scheduling, heartbeats), so neither starves
//     the other;
//   - the blocking lane, handed out only in reservations (ReserveBlocking)
//     made when a component is built. A queue's fetcher reserves the one
//     connection its BLMOVE holds, a cache's invalidation subscriber the one
//     its subscription holds. Asking for more than is left fails at once,
//     naming the lane, its size and who holds the rest.
//
// Each lane is bounded: no more than Size commands run on it at once and no
// more than Size sockets are open (go-redis's hidden pipeline pool is turned
// off, and Pub/Sub goes through reservations, each serving either commands
// or subscriptions; Subscribe and Watch on Client or Background escape the
// count, see Client). A caller that finds its lane
// full waits at most the lane's MaxWait and its own context; past MaxWaiters
// it is refused at once. Either way it gets a *LaneError (ErrLaneExhausted)
// saying which lane, its size, how many were in use and how many waiting.
// go-redis never waits for a connection behind the gate, so it never retries a
// pool timeout behind the caller; command retries are off altogether, so a
// command runs at most once per call.
//
// Blocking commands (BLMOVE, BLPOP, XREAD BLOCK, WAIT 0, ...) sent through
// the request or background lane fail with ErrBlockingCommand before they
// reach Redis. WAIT and WAITAOF with a timeout are bounded and allowed:
// send one in a pipeline after a write, so that it runs on the write's
// connection (not on Redis Cluster, where go-redis sends a keyless command
// to any node), with a timeout under ReadTimeout: one that is not is
// refused too (ErrBlockingCommand), with the rest of its pipeline, since its
// reply would run into the read deadline and count toward marking Redis
// down.
//
// # Health without a poller
//
// The outcome of every command feeds a small circuit breaker. After
// Config.FailureThreshold connection failures in a row (refused or reset
// connections, I/O timeouts, LOADING, MASTERDOWN, CLUSTERDOWN; not a call
// that ran out its caller's own deadline, which says nothing about Redis)
// Redis is
// marked down: request-lane calls and Admit fail in well under a microsecond
// with ErrUnavailable, except one call per Config.ProbeInterval that is let
// through as the probe: the first request-lane command once the interval
// has passed, or the one sent with the context AdmitContext returned (that
// probe is its caller's alone). The first success marks Redis up again.
// Caches and limiters use Admit to pick their fallback instead of waiting
// out a dial timeout per call.
//
// A refused password (NOAUTH, WRONGPASS) is a configuration error, not an
// outage: the first one marks Redis down on every lane, reservations
// included, and calls fail at once with ErrUnavailable carrying the Redis
// message (redis.IsAuthError matches it) instead of re-dialling to be
// refused again; one call per ProbeInterval finds out whether the
// credentials work again.
//
// go-redis has a dial breaker of its own: after PoolSize failed dials in a
// row a client stops dialling and re-dials once a second in a goroutine of
// its own. The pool keeps it out of the way (PoolSize is set to 1000 while
// MaxActiveConns is the real socket limit), so that after an outage callers
// find Redis again as soon as the next probe or backoff retry goes out, not
// a second later.
//
// # Sizing
//
// Sockets per Redis server = Request.Size + Background.Size + Blocking.Size.
// On Redis Cluster every node has its own sockets, so the sum applies per
// node. Give the blocking lane one connection per queue a process consumes
// plus one per cache with invalidation.
//
// # Redis Cluster
//
// With several Addrs, or ClusterMode, every lane and reservation is a
// go-redis ClusterClient, which keeps one connection pool per node. The
// budget then counts like this:
//
//   - A lane's Size bounds the commands and pipelines in flight on it across
//     the whole cluster: the gate stands in front of the cluster client.
//   - Each node's pool holds at most Size connections, so a lane opens at
//     most Size sockets on each node: Size x nodes in all. Stats().Open
//     counts them all; Stats().TotalSize is the per-node bound. A pipeline
//     whose keys live on several nodes holds one slot of the gate and one
//     socket on each node it touches. A reservation of n holds up to n
//     sockets on each node its commands reach. Size maxclients per node as
//     processes x TotalSize.
//   - Commands are not retried behind the caller here either. go-redis's
//     cluster client has a retry loop of its own (MaxRedirects, not
//     MaxRetries) that re-sends a command or a whole pipeline after EOF or a
//     timeout: the pool turns it off, so a call runs at most once
//     (TestCluster/CommandRunsAtMostOnce). A pipeline is split by node;
//     when one node's part finds no free socket there (go-redis's own slot
//     map reload uses them too), only that part waits and is sent later,
//     never the parts that already ran (PipelineRetryRunsNothingTwice); if
//     the wait ends first, those commands fail with the LaneError and the
//     others keep their replies. The price is that a MOVED or ASK
//     reply (a slot moved in a failover or a resharding) is returned to the
//     caller rather than followed; go-redis reloads the slot map when it
//     sees one, and the next call goes to the new owner.
//   - go-redis refreshes its slot map only on MOVED and once a minute, and
//     a dead master answers nothing. The pool has the map reloaded after
//     every connection failure (coalesced: one reload at a time per lane,
//     in a goroutine of go-redis's that ends with the reload), so callers
//     find a promoted replica within the cluster's failover time
//     (TestClusterFailover).
//   - Health is one state per pool, not per node: a master that stops
//     marks the pool down, and calls fail fast whatever node their key
//     lives on, until a probe succeeds. With replicas that lasts about the
//     failover time (cluster-node-timeout plus an election); without, until
//     the master is back (the cluster itself answers CLUSTERDOWN by then).
//   - Every key of one command, script or transaction must
//     share a hash tag; bounded's components give each queue, cache and
//     limiter its own tag, so their keys spread over the masters.
//
// # Redis Sentinel
//
// With MasterName, every lane and reservation is a go-redis failover
// client. It asks a sentinel for the master's address at every dial and
// subscribes there to +switch-master; when the sentinels switch, it drops
// its sockets to the old master and its next dial reaches the new one. A
// master that dies marks the pool down like any outage, so the request
// lane finds the new master with the first probe after the switch
// (TestSentinel).
//
// Each such client that has connected also holds sockets to one sentinel,
// apart from its lane's and counted apart in Stats (SentinelOpen): the
// subscription, and the sockets that ask for the master's address (one,
// up to the client's size while dials overlap). go-redis runs three
// goroutines for each, from its first dial until the pool closes it: the
// subscription's reader and its health check, and the listener that acts on
// +switch-master. Looking the master up while no sentinel is known also runs
// one short-lived goroutine per sentinel address.
//
// What a failover keeps: Redis replication is asynchronous, and a master
// acknowledges a write before any replica has it. A master killed before
// its replica caught up takes the writes it acknowledged last with it. And
// SENTINEL FAILOVER does not stop writes to the old master while it
// promotes a replica: until the sentinels announce the switch (about a
// second), clients keep writing to the old master, and what it
// acknowledges then is discarded when it becomes a replica. The pool
// follows the switch by itself; it cannot make an acknowledged write
// survive one. A write followed by WAIT (numreplicas, timeout) in the same
// pipeline learns how many replicas have it, and can be sent again when
// too few do.
//
// # Lifecycle
//
// A Pool starts no goroutine of its own and connects on first use; go-redis
// runs some behind it: under Sentinel, three per connected lane or
// reservation (above); on Redis Cluster, the slot map reload after a
// connection failure (one at a time per lane, ending with the reload); and
// after 1000 failed dials in a row to one server (the dial breaker above),
// a re-dial once a second until one succeeds or the pool closes. All end
// when Close returns or shortly after. The service builds one pool per process, passes it to
// every component, and closes it after the components have stopped
// (register Close first on the lifecycle group, so it runs last).
package pool
