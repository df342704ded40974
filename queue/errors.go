package queue

import (
	"errors"
	"fmt"
)

// Sentinel errors callers branch on; test with errors.Is.
var (
	// ErrPayloadTooLarge: a payload over Config.MaxPayload. Nothing was
	// enqueued.
	ErrPayloadTooLarge = errors.New("queue: payload too large")
	// ErrDuplicate: a job with the same ID (the ID option) still exists, so
	// the enqueue added nothing. The ID returned is the existing job's.
	ErrDuplicate = errors.New("queue: duplicate job ID")
	// ErrBatchTooLarge: an EnqueueBatch over Config.MaxBatch jobs or
	// Config.MaxBatchBytes bytes. Nothing was enqueued.
	ErrBatchTooLarge = errors.New("queue: batch too large")
	// ErrAlreadyStarted: Start was called on a worker that was already
	// started.
	ErrAlreadyStarted = errors.New("queue: worker already started")
	// ErrInvalidConfig is wrapped by every error New, NewWorker and
	// NewConsumer return for an invalid name or setting; the message names
	// the field.
	ErrInvalidConfig = errors.New("queue: invalid config")
	// ErrNotFound: Requeue was given the ID of no dead job.
	ErrNotFound = errors.New("queue: no such dead job")
)

// ErrStarted is the old name of ErrAlreadyStarted.
//
// Deprecated: use ErrAlreadyStarted.
var ErrStarted = ErrAlreadyStarted

// permanentError marks a handler error that must not be retried. Its text
// is err's: the dead letter's reason already says "failed permanently".
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so the job goes straight to the dead letters instead
// of being retried. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was wrapped with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// PanicError is the failure recorded when a handler panics: the worker
// recovers, counts a failed attempt, and keeps running.
type PanicError struct {
	Value any
	Stack []byte // the handler goroutine's stack, truncated to 8 KiB
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("handler panicked: %v\n%s", e.Value, e.Stack)
}
