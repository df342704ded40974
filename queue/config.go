package queue

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/bounded-go/bounded/internal/check"
)

// Defaults filled in by New for zero fields of Config.
const (
	DefaultNamespace        = "bq"
	DefaultMaxPayload       = 1 << 20
	DefaultMaxAttempts      = 5
	DefaultDeadLetterMax    = 10_000
	DefaultDeadLetterMaxAge = 7 * 24 * time.Hour
	DefaultMaxBatch         = 10_000
	DefaultMaxBatchBytes    = 16 << 20
	DefaultUniqueTTL        = 24 * time.Hour
)

// Config configures a Queue. The zero value is useful: New fills in the
// defaults documented on each field.
type Config struct {
	// Namespace prefixes every key: "{<Namespace>:<queue name>}:...".
	// It must not contain ':', so that no two (namespace, queue) pairs
	// share a key. Default "bq".
	Namespace string
	// MaxPayload is the largest payload Enqueue accepts, in bytes; larger
	// ones fail with ErrPayloadTooLarge. Default 1 MiB.
	MaxPayload int
	// MaxAttempts is how many times a job runs before it goes to the dead
	// letters, unless the MaxAttempts option says otherwise. At most
	// 2^31-1. Default 5.
	MaxAttempts int
	// DeadLetterMax and DeadLetterMaxAge bound the dead letters: older and
	// surplus entries are trimmed whenever one is added. Defaults 10,000 and
	// 7 days.
	DeadLetterMax    int
	DeadLetterMaxAge time.Duration
	// MaxBatch and MaxBatchBytes bound one EnqueueBatch, which is one
	// atomic command. Defaults 10,000 jobs and 16 MiB.
	MaxBatch      int
	MaxBatchBytes int
	// UniqueTTL bounds how long an ID given with the ID option stays taken
	// after the job's due time, should the job vanish without completing
	// (someone deleted keys by hand). At least 1ms. Default 24h.
	UniqueTTL time.Duration
	// MaxLen bounds the jobs the queue holds, ready and delayed (retries
	// waiting included; jobs in flight are not counted): an enqueue that
	// would take it over fails with a *FullError (ErrQueueFull) and writes
	// nothing, whatever the number of concurrent producers. Retries,
	// recovered jobs, Requeue and the occurrences of schedules
	// (Queue.Schedule) are never refused, so they may take the
	// queue past it. Give workers the same MaxLen: their acks measure the
	// drain rate behind FullError.RetryAfter and wake producers waiting with
	// WaitForRoom. See docs/queue.md, "Bounded queues".
	//
	// Default 0: unbounded. A finite default would turn an upgrade into an
	// outage for a user whose backlog is above it (every enqueue refused
	// until it drains), and no number fits both a queue of 100-byte jobs
	// and one of 1 MiB payloads: size it from Redis's memory and the wait
	// your callers accept (capacity x wait).
	MaxLen int64
	// MaxPartitions bounds the partitions (the Partition option) with jobs
	// waiting at once, due or delayed: an enqueue that would start one more
	// fails with ErrTooManyPartitions (which matches ErrQueueFull) and
	// writes nothing. A partition ends when its last waiting job is taken
	// (or cancelled, or deleted). Retries,
	// recovered jobs and Requeue are never refused. At most 1,000,000.
	// Default 10,000.
	MaxPartitions int
	// MaxPartitionLen bounds the jobs waiting in one partition (delayed
	// ones and retries count from the time they are delayed): an enqueue that would take a partition over it
	// fails with ErrPartitionFull (which matches ErrQueueFull), naming the
	// partition, and writes nothing. Default 0: only MaxLen bounds them.
	MaxPartitionLen int64
	// MaxWaiters bounds the producers of this process waiting for room
	// (WaitForRoom) in this queue at once; one more fails at once with
	// ErrTooManyWaiters. Default 1000.
	MaxWaiters int
	// MaxSchedules bounds the schedules registered on the queue
	// (Queue.Schedule); one more fails with ErrTooManySchedules.
	// Default 1000.
	MaxSchedules int
	// BeforeEnqueue, if set, is called for every job Enqueue, EnqueueJSON
	// and EnqueueBatch (once per job) are asked to write, on the caller's
	// goroutine with the caller's ctx, after the options and before
	// anything is sent. It may add headers (Enqueuing.SetHeader: a trace
	// context or a request ID from ctx), or refuse the job by returning an
	// error: the enqueue then writes nothing (a batch, none of its jobs)
	// and returns the error, wrapped. It cannot replace the payload: an
	// enqueue whose hook assigns Enqueuing.Payload fails (transform the
	// payload before Enqueue). The enqueue may still fail after it
	// (a payload over MaxPayload, a full queue). It is not called for what is not a
	// new job (retries, recovery, Requeue) nor for the occurrences of
	// schedules, which have no caller (JobHeaders sets theirs). A panic in
	// it is not recovered: it is the caller's.
	BeforeEnqueue func(ctx context.Context, job *Enqueuing) error
	// Logger receives what goes wrong in the background. Nil discards.
	Logger *slog.Logger
	// Now is the clock for due times and timestamps. Nil means time.Now.
	// Processes sharing a queue should have clocks within a fraction of a
	// second of each other (NTP): delayed jobs run by the clock of the
	// process that promotes them.
	Now func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	e := check.New(ErrInvalidConfig)
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	checkNamespace(e, "Config.Namespace", c.Namespace)
	check.Default(e, &c.MaxPayload, DefaultMaxPayload, "Config.MaxPayload")
	check.Default(e, &c.MaxAttempts, DefaultMaxAttempts, "Config.MaxAttempts")
	check.Default(e, &c.DeadLetterMax, DefaultDeadLetterMax, "Config.DeadLetterMax")
	check.Default(e, &c.MaxBatch, DefaultMaxBatch, "Config.MaxBatch")
	check.Default(e, &c.MaxBatchBytes, DefaultMaxBatchBytes, "Config.MaxBatchBytes")
	check.Default(e, &c.DeadLetterMaxAge, DefaultDeadLetterMaxAge, "Config.DeadLetterMaxAge")
	check.Default(e, &c.UniqueTTL, DefaultUniqueTTL, "Config.UniqueTTL")
	check.Default(e, &c.MaxWaiters, DefaultMaxWaiters, "Config.MaxWaiters")
	check.Default(e, &c.MaxSchedules, DefaultMaxSchedules, "Config.MaxSchedules")
	check.Default(e, &c.MaxPartitions, DefaultMaxPartitions, "Config.MaxPartitions")
	if c.MaxPartitions > maxMaxPartitions {
		e.Addf("Config.MaxPartitions must be at most %d, got %d", maxMaxPartitions, c.MaxPartitions)
	}
	if c.MaxPartitionLen < 0 {
		e.Addf("Config.MaxPartitionLen must not be negative (0 is unbounded), got %d", c.MaxPartitionLen)
	}
	if c.MaxLen < 0 {
		e.Addf("Config.MaxLen must not be negative (0 is unbounded), got %d", c.MaxLen)
	}
	if c.MaxAttempts > maxCount {
		e.Addf("Config.MaxAttempts must be at most %d, got %d", maxCount, c.MaxAttempts)
	}
	if c.UniqueTTL > 0 && c.UniqueTTL < time.Millisecond {
		// Redis expires keys in whole milliseconds: 0 would fail every
		// enqueue with an ID.
		e.Addf("Config.UniqueTTL must be at least 1ms, got %s", c.UniqueTTL)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, e.Err()
}

// checkNamespace checks a namespace: a name (check.Name) without ':'.
func checkNamespace(e *check.Errors, field, ns string) {
	if err := check.Name(field, ns); err != nil {
		e.Add(err)
	} else if strings.Contains(ns, ":") {
		// The hash tag is {<namespace>:<name>}: with a ':' in the namespace,
		// (a, b:c) and (a:b, c) would share every key.
		e.Addf("%s %q must not contain ':' (it separates the namespace from the queue name in every key; queue names may contain it)", field, ns)
	}
}

// Defaults filled in by NewWorker for zero fields of WorkerConfig.
const (
	DefaultConcurrency   = 10
	DefaultBlockTimeout  = 5 * time.Second
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = 10 * time.Minute
	DefaultMaxDeliveries = 5
)

// WorkerConfig configures a Worker. The zero value is useful: NewWorker
// fills in the defaults documented on each field.
type WorkerConfig struct {
	// Concurrency is the number of handler goroutines, and the most jobs the
	// worker holds at once (it never fetches more than it can run). Default 10.
	// With Slots, handler goroutines start with the jobs, as many as the
	// shared slots the worker holds, at most Concurrency.
	Concurrency int
	// BlockTimeout bounds one BZPOPMIN of the Consumer's fetch hub (the
	// shortest of its workers' is used): the hub blocks in Redis on the
	// doorbells of all the consumer's queues instead of polling, so an idle
	// consumer costs one command per BlockTimeout, whatever the number of
	// queues. A whole number of seconds (go-redis sends it so). See
	// docs/queue.md, "One connection per consumer". Default 5s.
	BlockTimeout time.Duration
	// JobTimeout bounds one run when the job has no Timeout option of its
	// own: the handler's context is cancelled after it. Zero means no bound.
	JobTimeout time.Duration
	// RetryBase and RetryMax shape the default retry delay: exponential from
	// RetryBase, capped at RetryMax, with full jitter. Defaults 1s and 10m.
	RetryBase time.Duration
	RetryMax  time.Duration
	// Backoff, if set, replaces the default retry delay. attempt is the
	// number of the run that failed (1 for the first). A panic in Backoff
	// is recovered and logged, and the default delay is used.
	Backoff func(attempt int, err error) time.Duration
	// MaxDeliveries is how many times a job may be recovered from consumers
	// that died while holding it before it goes to the dead letters, so a
	// job that crashes its process cannot crash-loop a fleet. At most
	// 2^31-1. Default 5.
	MaxDeliveries int
	// OnError, if set, is called after each failed run with the job and the
	// error, from the handler's goroutine, outside any lock. A panic in
	// OnError is recovered and logged; the job's outcome is unchanged.
	OnError func(job *Job, err error)
	// OnDone, OnRetry and OnDead, if set, are called with a job's outcome
	// once Redis has it: after the acker's pipeline that wrote it returned,
	// from the acker's goroutine, one call per outcome, in the order the
	// outcomes were written. An outcome whose write fails is written again
	// (backoff) and its hook called then; one never written (the drain
	// gave up, or a sweep had already given the job to another consumer)
	// calls none: the job runs again and that run's outcome calls it. A
	// panic is recovered, logged and counted (WorkerStats.HookPanics). The
	// acker writes nothing while a hook runs: keep hooks quick (count,
	// log, hand off to your own bounded channel), or acks, and with them
	// the handler slots they free, wait. OnDead is also called for jobs
	// sent to the dead letters without running (malformed, payload
	// missing, MaxDeliveries), with Ran 0; for a job that a previous
	// process with the same ConsumerID held too often, found when the
	// worker starts, it is called from the worker's fetcher goroutine.
	OnDone  func(Outcome)
	OnRetry func(Outcome)
	OnDead  func(Outcome)
	// Logger receives what goes wrong. Nil uses the queue's logger.
	Logger *slog.Logger
	// ResultTTL, when positive, keeps a result for every job the worker
	// runs that succeeds (the value its handler gave Job.SetResult, else an
	// empty one), for this long, and wakes the producers waiting for it
	// (Queue.Wait). Zero keeps none: SetResult fails and Wait sees only
	// dead and cancelled jobs end. See docs/queue.md, "Job control by ID".
	ResultTTL time.Duration
	// MaxResult bounds a result, in bytes: a larger one fails
	// Job.SetResult with ErrResultTooLarge. At most 1 MiB. Default 64 KiB.
	MaxResult int
	// RefuseEvictingPolicy makes Start fail with ErrEvictingPolicy when
	// Redis's maxmemory-policy may evict the queue's keys (allkeys-* or
	// volatile-*). Without it such a policy is logged at Error level and
	// shown in WorkerStats.Memory. An unknown policy (Redis refused to
	// tell) does not refuse. See docs/queue-memory.md.
	RefuseEvictingPolicy bool
	// Slots, if set, are handler slots the worker shares with the other
	// workers given the same Slots (NewSlots), of any queue: at most
	// Slots.Size() of their jobs run at once, and a freed slot goes to the
	// worker of highest Priority whose queue has jobs (strict), among
	// workers of equal Priority in proportion to Weight (weighted: none
	// starves). Concurrency then bounds the worker's share: default
	// Slots.Size(), at most that. Priority is in 0..MaxPriority (default
	// 0), Weight in 1..MaxWeight (default 1); both need Slots. See
	// docs/queue.md, "Priorities across queues".
	Slots    *Slots
	Priority int
	Weight   int
	// Limit is the queue's fleet-wide concurrency and rate limit (see
	// Limit). The zero value limits nothing and costs nothing.
	Limit Limit
}

// withDefaults fills and checks c; the logger defaults to the queue's.
func (c WorkerConfig) withDefaults(queueLogger *slog.Logger) (WorkerConfig, error) {
	e := check.New(ErrInvalidConfig)
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > 10_000 {
		e.Addf("WorkerConfig.Concurrency must be in 1..10000, got %d", c.Concurrency)
	}
	check.Default(e, &c.BlockTimeout, DefaultBlockTimeout, "WorkerConfig.BlockTimeout")
	check.Default(e, &c.RetryBase, DefaultRetryBase, "WorkerConfig.RetryBase")
	check.Default(e, &c.RetryMax, DefaultRetryMax, "WorkerConfig.RetryMax")
	if c.JobTimeout < 0 {
		e.Addf("WorkerConfig.JobTimeout must not be negative, got %s", c.JobTimeout)
	}
	if c.BlockTimeout > 0 && (c.BlockTimeout < time.Second || c.BlockTimeout%time.Second != 0) {
		// go-redis sends BLMOVE's timeout in whole seconds: anything else
		// would be silently rounded.
		e.Addf("WorkerConfig.BlockTimeout must be a whole number of seconds, at least 1s, got %s", c.BlockTimeout)
	}
	if c.RetryMax < c.RetryBase {
		e.Addf("WorkerConfig.RetryMax (%s) must not be below RetryBase (%s)", c.RetryMax, c.RetryBase)
	}
	check.Default(e, &c.MaxDeliveries, DefaultMaxDeliveries, "WorkerConfig.MaxDeliveries")
	if c.MaxDeliveries > maxCount {
		e.Addf("WorkerConfig.MaxDeliveries must be at most %d, got %d", maxCount, c.MaxDeliveries)
	}
	if c.ResultTTL < 0 || (c.ResultTTL > 0 && c.ResultTTL < time.Millisecond) {
		e.Addf("WorkerConfig.ResultTTL must be 0 (keep no results) or at least 1ms, got %s", c.ResultTTL)
	}
	check.Default(e, &c.MaxResult, DefaultMaxResult, "WorkerConfig.MaxResult")
	if c.MaxResult > maxResultLimit {
		e.Addf("WorkerConfig.MaxResult must be at most %d (1 MiB), got %d", maxResultLimit, c.MaxResult)
	}
	c.Limit = c.Limit.withDefaults(e, "WorkerConfig.Limit") // limits.go
	if c.Logger == nil {
		c.Logger = queueLogger
	}
	return c, e.Err()
}

// DefaultHeartbeatInterval is ConsumerConfig.HeartbeatInterval's default.
const DefaultHeartbeatInterval = 10 * time.Second

// MinHeartbeatInterval is the shortest ConsumerConfig.HeartbeatInterval:
// every interval costs one pipeline per process, so the heartbeat sends at
// most 10 a second.
const MinHeartbeatInterval = 100 * time.Millisecond

// ConsumerConfig configures a Consumer. The zero value is useful:
// NewConsumer fills in the defaults documented on each field.
type ConsumerConfig struct {
	// Namespace is the namespace of the queues the consumer's workers
	// consume (Config.Namespace); NewWorker refuses a queue of another.
	// Default "bq".
	Namespace string
	// ConsumerID names this process in Redis (its processing lists and
	// heartbeat). It must be unique among live processes; in one process,
	// a second Consumer of the same pool and namespace cannot run under an
	// ID whose heartbeat runs (its workers' Start fails). Default:
	// hostname-pid-random, chosen by NewConsumer. A stable ID (a
	// StatefulSet pod name) lets a restarted process take back its own
	// unfinished jobs at once instead of waiting for the heartbeat to
	// expire (each counts a delivery, as for a swept consumer: see
	// WorkerConfig.MaxDeliveries).
	ConsumerID string
	// HeartbeatInterval is how often this process proves it is alive and
	// checks for dead consumers. A consumer counts as dead HeartbeatTTL
	// after its last heartbeat, so a crashed process's jobs are back in the
	// ready list HeartbeatTTL + HeartbeatInterval after it died (defaults
	// 10s and 2 x HeartbeatInterval: 30s), later only when its sweep had
	// to wait (Redis errors, another process sweeping) or more than 64
	// consumers died within the hour (see docs/queue.md).
	// HeartbeatInterval is at least MinHeartbeatInterval (100ms), and
	// HeartbeatTTL longer than HeartbeatInterval.
	HeartbeatInterval time.Duration
	HeartbeatTTL      time.Duration
	// Logger receives what goes wrong with the heartbeat and the sweeps.
	// Nil uses the logger of the worker whose Start starts the heartbeat
	// (WorkerConfig.Logger, by default its queue's Config.Logger).
	Logger *slog.Logger
	// Now is the clock heartbeat deadlines are written and judged with. Nil
	// means time.Now. The clocks of the processes must agree within
	// HeartbeatTTL - HeartbeatInterval.
	Now func() time.Time
	// Control subscribes the consumer to its control channel, so that
	// Queue.Cancel cancels the handlers of the jobs it runs (within
	// milliseconds). It costs one connection of the pool's blocking lane per
	// Consumer, reserved at its first worker's Start (which fails with
	// pool.ErrOverBudget when the lane has no room), and one lifecycle task.
	// Without it, Cancel removes waiting jobs but does not interrupt running
	// ones.
	Control bool
}

func (c ConsumerConfig) withDefaults() (ConsumerConfig, error) {
	e := check.New(ErrInvalidConfig)
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	checkNamespace(e, "ConsumerConfig.Namespace", c.Namespace)
	if c.ConsumerID == "" {
		c.ConsumerID = defaultConsumerID()
	} else if err := check.Name("ConsumerConfig.ConsumerID", c.ConsumerID); err != nil {
		e.Add(err)
	}
	check.Default(e, &c.HeartbeatInterval, DefaultHeartbeatInterval, "ConsumerConfig.HeartbeatInterval")
	check.Default(e, &c.HeartbeatTTL, 2*max(c.HeartbeatInterval, 0), "ConsumerConfig.HeartbeatTTL")
	if c.HeartbeatInterval > 0 && c.HeartbeatInterval < MinHeartbeatInterval {
		e.Addf("ConsumerConfig.HeartbeatInterval must be at least %s, got %s (each interval costs one pipeline)", MinHeartbeatInterval, c.HeartbeatInterval)
	}
	if c.HeartbeatInterval > 0 && c.HeartbeatTTL <= c.HeartbeatInterval {
		e.Addf("ConsumerConfig.HeartbeatTTL (%s) must be longer than HeartbeatInterval (%s), or one late heartbeat makes a live process look dead",
			c.HeartbeatTTL, c.HeartbeatInterval)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, e.Err()
}
