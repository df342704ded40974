// Package queue is a reliable Redis job queue: one blocking fetcher per queue
// and process, N handlers, delayed jobs without polling, retries with
// backoff, dead letters, and recovery of the jobs of processes that died.
//
// The service this library was written after ran, per queue, one 100 ms
// polling timer per unit of concurrency plus a 1 s timer for delayed jobs,
// all on one shared pool of 20 connections. Here a queue costs one reserved
// connection per process, blocks in Redis instead of polling, and an idle
// process with 3 queues x 5 workers sends under one command per second
// (measured by TestIdleTrafficBudget on a real server; a queue that holds
// delayed jobs adds one read per BlockTimeout while it does).
//
// # Producing
//
//	q, _ := queue.New(p, "emails", queue.Config{})
//	id, err := q.Enqueue(ctx, payload)                         // one LPUSH
//	_, err = q.Enqueue(ctx, payload, queue.Delay(time.Minute)) // one script call
//	_, err = q.Enqueue(ctx, payload, queue.ID("order-42"))     // idempotent: ErrDuplicate while it exists
//	ids, err := q.EnqueueBatch(ctx, payloads)                  // one atomic LPUSH for them all
//
// # Consuming
//
//	w, _ := queue.NewWorker(q, handle, queue.WorkerConfig{Concurrency: 5})
//	err := w.Start(g) // g is the service's lifecycle group; closing it drains w
//
// # How a job moves
//
// Every key of a queue carries the hash tag {<namespace>:<name>}, so the
// same code runs on one Redis and on Redis Cluster, and every script gets
// its keys in KEYS. A namespace may not contain ':', so no two queues share
// a key. A job is one list element (a versioned envelope: ID,
// attempt, max attempts, deliveries, enqueued-at, timeout, and the payload
// when it is at most 4 KiB), so a small job's fetch needs no second read and
// no script parses anything. A larger payload is kept apart, in the queue's
// payloads hash: written once at enqueue and read once per run with plain
// commands (by the fetcher, on its own connection, one pipeline per fetch),
// while acks, retries, promotions and recoveries move an element of a few
// dozen bytes. No payload passes through Lua (about ten times the
// server time of a plain command), and no call moves more than about 1 MiB
// of elements through Lua (promotion, batch fetch, recovery) or returns or
// frees more than about 4 MiB (Dead, trimming, Purge): every call takes a
// few milliseconds at most, and makes progress by at least one job. The
// exception is a job enqueued with Durable: its write and WAIT share one
// pipeline, so it keeps its payload in its element whatever its size, and
// that element moves whole (alone, when it is over the bound).
//
//   - ready (list): Enqueue LPUSHes; the fetcher takes from the other end.
//   - processing list, one per consumer process: BLMOVE ready -> processing
//     with a finite timeout (WorkerConfig.BlockTimeout), only when a handler
//     slot is free. When the BLMOVE did not have to wait (a backlog), the
//     fetcher takes up to the free slots in one script call instead.
//   - the acker takes outcomes off the processing list, pipelining whatever
//     accumulated while the previous round trip was in flight: LREM for a
//     success, a script for a retry or a dead letter. Each is conditional on
//     the element still being there.
//   - delayed (sorted set, score = due ms): delayed jobs and retries. ONE
//     scheduler per worker sleeps on one timer until the exact next due time
//     and promotes due jobs atomically. It is woken early by a delayed
//     Enqueue in its own process, by its acker's retries, and, for jobs
//     enqueued by other processes, by a wake marker the enqueue script
//     pushes to the head of the ready list when the job became the earliest
//     one: whichever fetcher takes the marker wakes its scheduler. So that
//     a process that stops is not the only one that knew: a scheduler that
//     stops while it knows of delayed jobs pushes a marker for the others;
//     while the delayed set is non-empty, a scheduler re-reads the earliest
//     due time when its fetcher's BLMOVE times out (one script call per
//     BlockTimeout, only then); and the heartbeat that finds a dead
//     consumer makes the schedulers of its process re-read. A due job is therefore promoted
//     within about BlockTimeout of its due time while a worker that saw the
//     delayed set non-empty is alive (a process stopping cleanly hands
//     over), and at the latest when the others see the process that alone
//     knew of it dead (HeartbeatTTL + HeartbeatInterval after it crashed).
//     With nothing delayed a scheduler sends nothing.
//   - dead letters (sorted set of IDs + hash of raw records; a payload kept
//     apart stays in the payloads hash): jobs that failed their last
//     attempt, returned Permanent(err), could not be decoded, or were
//     recovered from dead consumers more than MaxDeliveries times (the
//     fetcher sends those there instead of running them). Trimmed by count
//     and age as entries are added. A dead letter is never
//     overwritten: a later job with the same ID (the ID option frees an ID
//     once its job is dead) is kept beside it as "<ID>~<died at ms>". See
//     Dead, Requeue, Purge.
//
// # Crash recovery
//
// Each process sends ONE heartbeat per HeartbeatInterval (at least 100ms)
// for all its queues: a ZADD of its deadline into {<namespace>}:heartbeats,
// pipelined with a ZREVRANGEBYSCORE for the (at most 64) consumers whose
// deadline passed most recently. The heartbeat hands that list to the
// process's sweeper, a task of its own, and never waits for it, so however
// long sweeps take (several round trips per dead consumer and queue) the
// process keeps its own heartbeat. While more than 64 are dead, the sweeper
// reads older ones a page per heartbeat, in rotation. A dead consumer's
// processing lists are moved back to the head of the ready lists of the
// queues this process consumes, one process per queue at a time (SET NX PX
// lock, lasting HeartbeatTTL, so a sweeper that dies mid-sweep holds the
// others back no longer than its death takes to be seen), each job's
// delivery count going up. A sweep reads the consumer's
// incarnation token, then checks again that its heartbeat expired, and its
// move is refused if the token changed: a consumer that restarted with the
// same stable ConsumerID keeps the jobs it fetched since. A restarted
// consumer's jobs of its previous life on a queue it no longer consumes are
// swept too, though it is alive: its heartbeat records the token it runs
// as ({<namespace>}:incarnations), and a queue recording another one for it
// holds a previous life's jobs (found when a worker of that queue starts,
// and by the 15-minute check of the consumers set). A sweep that
// could not finish (Redis errors, the lock held by another process) is
// tried again on the next heartbeat until the list is empty; and every 15
// minutes the sweeper checks each queue's consumers set again, so a dead
// consumer whose sweeps kept failing until its heartbeat was trimmed (after
// an hour) is still recovered. The sweeper stops as soon as Close begins.
// Deadlines are written and judged with each process's own clock
// (Config.Now): the clocks of the processes must agree within HeartbeatTTL
// - HeartbeatInterval (10 s by default), or a process whose clock runs
// behind looks dead to the others and its running jobs run twice.
// Recovery therefore takes HeartbeatTTL + HeartbeatInterval (30 s by
// default; configurable down to about a second), plus one heartbeat per
// sweep that had to be retried, plus for a consumer beyond the 64 most
// recently dead up to ceil(N/64)-1 heartbeats while N consumers are dead,
// and does not burn a retry. A worker also reconciles
// its processing list with what it holds after a fetch error (a BLMOVE that
// failed on the client may have moved an element on the server), now and
// then while busy, and at start (a stable ConsumerID finds the jobs of its
// previous life at once, each counting a delivery). TestChaos checks it
// with worker processes SIGKILLed at random while they share 20,000 jobs,
// and TestChaosSlowRedis with a slow Redis, retries, delayed jobs, stable
// IDs restarted mid-sweep and dead consumers appearing sixteen at a time:
// nothing is lost, and only jobs a killed process held can run twice.
//
// # Delivery guarantee
//
// At least once. A job is acked only after its handler returned; a process
// that dies, or a handler still running when the drain gives up, means the
// job runs again elsewhere. A job is never lost while Redis keeps its data:
// it is always in exactly one of ready, delayed, a processing list or the
// dead letters (or done). WorkerStats.LostLeases counts outcomes that found
// their job already recovered by a sweep (this process was thought dead):
// those jobs may have run twice. An outcome written again after its reply
// was lost, that then finds its job gone, counts as written (its first
// write most likely took it), not as a lost lease. "Keeps its data"
// excludes eviction: give Redis maxmemory-policy noeviction. An evicted
// list loses its jobs, and an evicted payloads hash sends the jobs whose
// payloads it held to the dead letters (their payload missing). Nor does
// it cover a failover (Sentinel or Cluster): replication is asynchronous,
// so a master that fails over can lose jobs it acknowledged last, and the
// outcomes it acknowledged, which makes those jobs run again. Enqueue with
// Durable to learn whether a job reached the replicas.
//
// # Shutdown
//
// Closing the lifecycle group stops the fetcher (its blocked BLMOVE is ended
// by closing its connection), lets running handlers finish until shortly
// before the Close deadline, then cancels their contexts, writes the
// outcomes, puts every unfinished job back at the head of the ready list and
// leaves the heartbeat, all by the deadline. Every running handler's
// context is cancelled by then in all cases: at once when the Close context
// is already done (cancelled, or its deadline past), and whenever a context
// without deadline ends. With no time left nothing more is written: the
// heartbeat is left to expire and other processes recover the jobs. Jobs
// that were fetched but not started, and jobs whose handler was cancelled
// by the drain, do not count as failed attempts. If Redis does not let the worker put its jobs back
// before the deadline, Close reports it and the process leaves its
// heartbeat to expire instead of removing it, so other processes recover
// those jobs as they would a crashed one's.
//
// # Redis trouble
//
// Refused connections, restarts, LOADING, failovers and killed connections
// make the fetcher, acker and scheduler back off exponentially with jitter
// (10 ms to 1 s) and resume by themselves; nothing hot-loops and no
// goroutine is added. Outcomes that cannot be written are kept and written
// when Redis is back; they are bounded, because a handler slot is only
// freed when its outcome is handed to the acker, and the acker stops taking
// outcomes at one pipeline (256): at most 256 + 3 x Concurrency outcomes
// wait in memory (the acker's batch, its channel, and the handlers
// blocked handing theirs over); once that is full, the fetcher fetches
// nothing more until Redis takes outcomes again. On Redis
// Cluster a slot that moved (a failover) answers MOVED once per client,
// which is handled like any other Redis error (TestClusterFailover).
//
// # Upgrading
//
// Jobs and dead letters written by earlier versions are read and run. The
// reverse does not hold: workers of versions before payloads were kept
// apart dead-letter a job with a payload over 4 KiB as malformed ("unknown
// flags"), and cannot list or requeue dead letters written by this version.
// Upgrade every worker before producers enqueue payloads over 4 KiB, or
// Requeue such dead letters with this version afterwards (their payload is
// kept). While both versions run, a dead letter with a payload over 4 KiB
// that an earlier version trims leaves that payload in the payloads hash.
package queue
