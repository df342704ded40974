package queue

import (
	"errors"
	"fmt"
	"time"
)

// ErrQueueFull is matched (errors.Is) by the *FullError an enqueue returns
// when the queue already holds Config.MaxLen jobs. Nothing was enqueued.
var ErrQueueFull = errors.New("queue: full")

// FullError is the error an enqueue returns when the queue is full: test
// for it with errors.Is(err, ErrQueueFull), read it with errors.As.
type FullError struct {
	Queue string // the queue's name
	Len   int64  // the jobs the queue held when the enqueue was refused
	Limit int64  // Config.MaxLen
	// RetryAfter estimates when there will be room, from the rate the queue
	// drained at recently; 0 when there is no recent drain to go by, and
	// for a batch of more jobs than Limit, which never fits.
	RetryAfter time.Duration
}

func (e *FullError) Error() string {
	s := fmt.Sprintf("queue: %q is full: %d jobs, the limit is %d", e.Queue, e.Len, e.Limit)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf("; retry after %s", e.RetryAfter)
	}
	return s
}

// Is reports whether target is ErrQueueFull.
func (e *FullError) Is(target error) bool { return target == ErrQueueFull }
