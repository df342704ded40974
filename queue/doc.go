// Package queue is a reliable Redis job queue: one blocking connection per
// process whatever the number of queues it consumes (one per hash-slot
// group on Redis Cluster), N handlers per queue, delayed jobs without
// polling, retries with backoff, dead letters, fleet-wide pause, and
// recovery of the jobs of processes that died.
//
// # Model
//
// A Queue (New) is a named queue in the Redis behind a pool; producers call
// Enqueue and EnqueueBatch on it. A Consumer (NewConsumer) is this process
// as a consumer of one namespace's queues: its ConsumerID, one heartbeat
// and one fetch hub (one blocking connection, BZPOPMIN on the doorbells of
// all its queues), shared by all its workers. A Worker (NewWorker) consumes
// one queue for a Consumer, with Concurrency handlers; a process runs at
// most one worker per queue. Queue.Pause and Resume stop and restart the
// takes of a queue in every process. Every key of a queue carries the hash tag {<namespace>:<name>},
// so the same code runs on one Redis and on Redis Cluster.
//
//	q, _ := queue.New(p, "emails", queue.Config{})
//	c, _ := queue.NewConsumer(p, queue.ConsumerConfig{})
//	w, _ := queue.NewWorker(c, q, handle, queue.WorkerConfig{Concurrency: 5})
//	err := w.Start(g) // g: the service's lifecycle group; closing it drains w
//	id, err := q.Enqueue(ctx, payload, queue.Delay(time.Minute))
//
// Delivery is at least once: a job is acked only after its handler
// returned, and a job whose process died (its heartbeat expired,
// HeartbeatTTL + HeartbeatInterval after the crash) runs again elsewhere. A
// job is never lost while Redis keeps its data (maxmemory-policy
// noeviction, no failover; see Durable for failovers). At maxmemory under
// noeviction, Enqueue fails with Redis's OOM error and workers still drain
// the queue (Redis 7; see docs/queue-memory.md). A job fails into the
// dead letters after its last attempt, on Permanent(err), when malformed, or
// when recovered from dead consumers more than MaxDeliveries times; see
// Dead, Requeue and Purge.
//
// Periodic jobs: Queue.Schedule registers a cron spec or Every(d) in
// any number of processes; each occurrence is one delayed job with the ID
// cron:<name>:<due ms>, run once, with no leader and no timer per schedule
// (see docs/queue.md, "Periodic jobs").
//
// Visibility: an Inspector (NewInspector) lists a namespace's queues,
// consumers and jobs by state in bounded pages, and deletes, requeues and
// purges; WorkerConfig.OnDone, OnRetry and OnDead are called by the acker
// once an outcome is in Redis (see docs/queue.md, "Inspecting queues").
//
// Job headers: the Header and Headers options attach up to MaxHeaders
// string entries (MaxHeaderBytes together) to a job, a trace context for
// instance; handlers read them as Job.Headers, and they stay with the job
// through retries, recovery and the dead letters. A job without them costs
// nothing more.
//
// Priorities: the Priority option puts a job at a level (0..MaxLevel,
// default 0); a worker takes the highest level holding jobs first, so a
// job enqueued behind a backlog at a higher level starts at the next free
// handler slot. The level stays with the job through retries, recovery and
// the dead letters.
//
// Job types: the Type option names a job's kind; a Mux routes on it
// (Mux.Run is a Handler), Chain adds Middleware, HandleJSON and EnqueueJSON
// speak JSON, and Config.BeforeEnqueue sees every new job.
//
// # Zero values, concurrency, closing
//
// Config, WorkerConfig and ConsumerConfig are useful as zero values: New,
// NewWorker and NewConsumer fill in the documented defaults. Queue, Consumer
// and Worker have no useful zero value and are safe for concurrent use. A
// Queue and a Consumer hold no resources and need no closing. A Worker's
// tasks run on the lifecycle group given to Start; closing the group drains
// it: no new fetch, running handlers finish until shortly before the Close
// deadline and are then cancelled, outcomes are written, unfinished jobs go
// back to the head of the ready list, and the consumer leaves the
// heartbeat, all by the deadline. The pool must be closed after the group.
//
// # Backpressure
//
// Config.MaxLen bounds a queue's ready and delayed jobs (default unbounded):
// an enqueue or batch that does not fit writes nothing and fails with a
// *FullError (length, limit, RetryAfter). With WaitForRoom it waits instead,
// woken by the consumers; that needs Queue.Start (one subscriber task and
// one reserved connection per Queue).
//
// Partitions (tenants): the Partition option puts a job in a partition,
// and the queue serves its partitions round-robin, so one partition's
// backlog does not delay another's jobs. Config.MaxPartitions and
// Config.MaxPartitionLen bound them (ErrTooManyPartitions,
// ErrPartitionFull; both match ErrQueueFull); with WaitForRoom a refused
// producer waits, woken by the take that makes room.
//
// # Errors
//
// Invalid names and settings fail at construction with an error wrapping
// ErrInvalidConfig that names the field. Enqueue returns ErrPayloadTooLarge,
// ErrBatchTooLarge, ErrInvalidArgument (any option given an invalid value
// or a combination it refuses; ErrInvalidHeader, for headers, matches it
// too), ErrDuplicate (the ID option),
// ErrNotReplicated
// (Durable) and ErrQueueFull (with WaitForRoom also ErrTooManyWaiters,
// ErrNotStarted or ctx's error, each matching ErrQueueFull); Start returns
// ErrAlreadyStarted, pool.ErrOverBudget when the blocking lane cannot hold
// the consumer's fetch hub, ErrEvictingPolicy (with WorkerConfig.RefuseEvictingPolicy),
// and lifecycle.ErrClosed; Requeue returns ErrNotFound; Inspector calls
// return ErrInvalidArgument and ErrJobGone. A Mux fails a job of a type it
// has no handler for with ErrUnknownType, and HandleJSON one whose payload
// does not decode with ErrDecode, both Permanent. Redis errors in the background
// are retried with backoff (10 ms to 1 s) and logged, never returned to a
// handler. A handler panic is recovered as a failed attempt (PanicError).
//
// The design, its figures and the tests that hold it are in docs/queue.md
// (https://github.com/bounded-go/bounded/blob/main/docs/queue.md).
package queue
