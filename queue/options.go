package queue

import (
	"fmt"
	"math"
	"time"
)

// EnqueueOption changes one enqueued job.
type EnqueueOption func(*enqueueOpts) error

type enqueueOpts struct {
	at          time.Time // zero: now
	delay       time.Duration
	maxAttempts int
	timeout     time.Duration
	id          string
}

// Delay makes the job ready d from now. d <= 0 means now.
func Delay(d time.Duration) EnqueueOption {
	return func(o *enqueueOpts) error { o.delay, o.at = d, time.Time{}; return nil }
}

// At makes the job ready at t; a t in the past means now. t must be before
// the year 10000.
func At(t time.Time) EnqueueOption {
	return func(o *enqueueOpts) error {
		if !t.Before(maxDue) {
			return fmt.Errorf("queue: At(%s): must be before the year 10000", t)
		}
		o.at, o.delay = t, 0
		return nil
	}
}

// maxDue bounds due times, so that every due time and idempotency-key TTL
// is a valid Redis score and expiry (and far from float64's 2^53 ms).
var maxDue = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)

// maxCount bounds the counts an envelope holds (attempts, max attempts,
// deliveries): the decoder accepts up to it, and the API refuses more.
const maxCount = math.MaxInt32

// MaxAttempts sets how many times the job may run before it goes to the dead
// letters (1 <= n <= 2^31-1; 1 means no retry). The default is Config.MaxAttempts.
func MaxAttempts(n int) EnqueueOption {
	return func(o *enqueueOpts) error {
		if n < 1 {
			return fmt.Errorf("queue: MaxAttempts(%d): must be at least 1", n)
		}
		if n > maxCount {
			return fmt.Errorf("queue: MaxAttempts(%d): must be at most %d", n, maxCount)
		}
		o.maxAttempts = n
		return nil
	}
}

// Timeout bounds one run of the job: the handler's context is cancelled
// after d. The default is WorkerConfig.JobTimeout.
func Timeout(d time.Duration) EnqueueOption {
	return func(o *enqueueOpts) error {
		if d <= 0 {
			return fmt.Errorf("queue: Timeout(%s): must be positive", d)
		}
		if d < time.Millisecond {
			return fmt.Errorf("queue: Timeout(%s): the resolution is one millisecond", d)
		}
		o.timeout = d
		return nil
	}
}

// ID gives the job its ID and makes the enqueue idempotent: while a job with
// this ID exists (ready, delayed, retrying or running), another enqueue with
// the same ID adds nothing and returns ErrDuplicate. The ID is free again
// once the job has succeeded or gone to the dead letters, and at the latest
// Config.UniqueTTL after the job's due time. A later job with the ID that
// dies too does not replace the first one's dead letter: both are kept
// (see DeadJob.ID). IDs are printable ASCII without
// spaces, '|', '{' or '}', at most 200 bytes.
func ID(id string) EnqueueOption {
	return func(o *enqueueOpts) error {
		if err := validID(id); err != nil {
			return fmt.Errorf("queue: ID: %w", err)
		}
		o.id = id
		return nil
	}
}
