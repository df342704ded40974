package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// outcome is what a call's result says about Redis: the input of the
// health state.
type outcome int

const (
	outcomeNeutral outcome = iota // says nothing about Redis (caller gave up, lane full, ...)
	outcomeUp
	outcomeDown
	outcomeAuth // Redis refused the credentials
)

// classify decides what an error says about Redis being reachable.
func classify(ctx context.Context, err error) outcome {
	if err == nil || errors.Is(err, redis.Nil) {
		return outcomeUp
	}
	if rerr, ok := errors.AsType[redis.Error](err); ok {
		return replyOutcome(rerr)
	}
	switch {
	case errors.Is(err, ErrLaneExhausted), errors.Is(err, ErrUnavailable),
		errors.Is(err, ErrBlockingCommand), errors.Is(err, ErrClosed),
		errors.Is(err, redis.ErrClosed):
		return outcomeNeutral
	case ctx.Err() != nil || deadlinePassed(ctx) || errors.Is(err, context.DeadlineExceeded):
		// The caller's deadline or cancellation ended the call; it may have
		// been too short for a healthy Redis. (With socket deadlines taken
		// from ctx, the read can fail with an I/O timeout a moment before
		// ctx itself reports its error: hence deadlinePassed.) A
		// component's own bound (WithTimeout) is another matter.
		if ownTimeout(ctx) {
			return outcomeDown
		}
		return outcomeNeutral
	case connFailure(err):
		return outcomeDown
	}
	return outcomeNeutral
}

// replyOutcome classifies an error reply: Redis answered, and only replies
// that mean "not serving" count as down. (TRYAGAIN, during a resharding, is
// about one slot's keys, not about Redis serving.)
func replyOutcome(rerr redis.Error) outcome {
	msg := rerr.Error()
	if strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "WRONGPASS") {
		return outcomeAuth
	}
	for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN"} {
		if strings.HasPrefix(msg, p) {
			return outcomeDown
		}
	}
	return outcomeUp
}

// connFailure reports whether err is the connection failing: closed, reset
// or refused, a timeout or another network error.
func connFailure(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true // timeouts and other network failures
	}
	_, ok := errors.AsType[*net.OpError](err)
	return ok
}

// deadlinePassed reports whether ctx has a deadline that is now past.
func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// callerTimeout rewrites the I/O timeout of a call that ran out its
// caller's deadline so that it matches context.DeadlineExceeded, as every
// "the deadline passed" error of this library does. Other errors pass.
func callerTimeout(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !deadlinePassed(ctx) {
		return err
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return fmt.Errorf("pool: the caller's deadline passed during the call: %w (%w)", context.DeadlineExceeded, err)
	}
	return err
}
