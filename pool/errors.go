package pool

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors callers branch on. Errors returned by the pool wrap them;
// test with errors.Is.
var (
	// ErrLaneExhausted: a lane had no connection to give within the caller's
	// context and the lane's max wait, or too many callers were already
	// waiting. The concrete error is a *LaneError saying which lane, its size,
	// how many connections were in use and how many callers were waiting.
	ErrLaneExhausted = errors.New("pool: lane exhausted")
	// ErrUnavailable: Redis is believed down (recent connection failures) and
	// this call was not chosen to probe it. Returned in microseconds instead
	// of after a dial timeout. See Pool.Admit.
	ErrUnavailable = errors.New("pool: redis unavailable")
	// ErrOverBudget: a reservation asked for more blocking connections than
	// the lane has left. Returned when a component is built, never under load.
	ErrOverBudget = errors.New("pool: blocking lane over budget")
	// ErrBlockingCommand: a blocking command (BLMOVE, BLPOP, XREAD BLOCK, ...)
	// was sent through the request or background lane, where it would hold a
	// connection other callers need, or a command that would leave its
	// connection in subscribe or monitor mode (SUBSCRIBE, MONITOR, ...).
	// Such commands go through a Reservation.
	ErrBlockingCommand = errors.New("pool: blocking command outside the blocking lane")
	// ErrRefusedCommand: a command no lane sends, a reservation neither,
	// because it would change the server for every client (CLIENT PAUSE) or
	// a pooled connection for its later callers (SELECT, AUTH, HELLO or
	// CLIENT SETNAME of another database, user, protocol or name than the
	// pool's). Send it from a client of its own, outside the pool.
	ErrRefusedCommand = errors.New("pool: command refused on pooled connections")
	// ErrReservationUse: a command on a reservation that holds
	// subscriptions, or a subscription on one that runs commands. Each
	// reservation serves one of the two, so its sockets stay within its size.
	ErrReservationUse = errors.New("pool: a reservation serves either commands or subscriptions")
	// ErrInvalidConfig: New was given a Config it cannot use. Every such
	// error wraps it and names the field; all problems are reported at once.
	ErrInvalidConfig = errors.New("pool: invalid config")
	// ErrClosed: the pool (or the reservation) has been closed.
	ErrClosed = errors.New("pool: closed")
)

// LaneError describes a lane that could not serve a caller. It matches
// ErrLaneExhausted, and also the context error when the caller's context
// ended (so a deadline matches context.DeadlineExceeded); a wait that ran
// into the lane's own max wait matches context.DeadlineExceeded too.
type LaneError struct {
	Lane    string        // "request", "background" or "blocking"
	Owner   string        // the reservation's owner, for the blocking lane
	Size    int           // connections the lane (or reservation) may use
	InUse   int           // connections in use when the caller gave up
	Waiting int           // callers waiting, this one included
	Waited  time.Duration // how long this caller waited
	Reason  string
	Err     error // context.Canceled / context.DeadlineExceeded, or nil
}

func (e *LaneError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pool: %s lane exhausted", e.Lane)
	if e.Owner != "" {
		fmt.Fprintf(&b, " (reservation %q)", e.Owner)
	}
	fmt.Fprintf(&b, ": size %d, in use %d, waiting %d", e.Size, e.InUse, e.Waiting)
	if e.Waited > 0 {
		fmt.Fprintf(&b, ", waited %s", e.Waited.Round(time.Microsecond))
	}
	fmt.Fprintf(&b, ": %s", e.Reason)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Is makes a LaneError match ErrLaneExhausted.
func (e *LaneError) Is(target error) bool { return target == ErrLaneExhausted }

// Unwrap returns the context error, if any.
func (e *LaneError) Unwrap() error { return e.Err }
