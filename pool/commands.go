package pool

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Command classification: which commands pass a lane's gate without a slot
// (connection set-up), and which a shared lane refuses (blocking commands,
// and WAITs that would outlast the read timeout).

// cmdName returns a command's name as sent, in whatever case the caller used.
func cmdName(args []any) string {
	if len(args) == 0 {
		return ""
	}
	s, _ := args[0].(string)
	return s
}

// isConnInit reports whether cmd is one of the commands go-redis sends on a
// new connection before handing it to the caller (HELLO, AUTH, SELECT,
// READONLY, CLIENT SETNAME/SETINFO/TRACKING/MAINT_NOTIFICATIONS). go-redis
// runs them through the client's hooks while the caller that caused the dial
// already holds a slot of the gate, so they must pass without taking another:
// with every slot taken they would wait for themselves.
func isConnInit(cmd redis.Cmder) bool {
	args := cmd.Args()
	name := cmdName(args)
	// strings.EqualFold, not strings.ToLower: this runs for every command,
	// and lowering an upper-case name allocates.
	switch {
	case strings.EqualFold(name, "hello"), strings.EqualFold(name, "auth"),
		strings.EqualFold(name, "select"), strings.EqualFold(name, "readonly"):
		return true
	case strings.EqualFold(name, "client"):
		if len(args) < 2 {
			return false
		}
		sub, _ := args[1].(string)
		return strings.EqualFold(sub, "setname") || strings.EqualFold(sub, "setinfo") ||
			strings.EqualFold(sub, "tracking") || strings.EqualFold(sub, "maint_notifications")
	}
	return false
}

// refusedEverywhere returns ErrRefusedCommand for a command no lane sends,
// a reservation neither, or nil. within is "" or " in a pipeline"; db is the
// pool's database.
//
//   - CLIENT PAUSE pauses every client of the server, the pool's own
//     included (CLIENT UNPAUSE passes: it is the way out of a pause).
//   - SELECT of another database than db would leave the connection, back
//     in the lane's pool, on that database for its later callers. go-redis
//     sends SELECT db through the hooks on every new connection (see
//     isConnInit); that one, and any SELECT of db, changes nothing.
func refusedEverywhere(cmd redis.Cmder, within, lane string, db int) error {
	args := cmd.Args()
	name := cmdName(args)
	if len(name) != 6 || len(args) < 2 {
		return nil
	}
	switch name[0] {
	case 'c', 'C':
		if sub, _ := args[1].(string); strings.EqualFold(name, "client") && strings.EqualFold(sub, "pause") {
			return fmt.Errorf("%w: CLIENT PAUSE%s on the %s lane would pause every client of the server, this pool's callers included; send it from a client of its own, outside the pool",
				ErrRefusedCommand, within, lane)
		}
	case 's', 'S':
		if !strings.EqualFold(name, "select") {
			return nil
		}
		if n, ok := intArg(args[1]); ok && n == int64(db) && len(args) == 2 {
			return nil
		}
		return fmt.Errorf("%w: SELECT %v%s on the %s lane would leave a pooled connection on another database than the pool's (%d) for its later callers; use a Pool with that Config.DB",
			ErrRefusedCommand, args[1], within, lane, db)
	}
	return nil
}

// allConnInit reports whether a pipeline holds connection set-up only.
func allConnInit(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if !isConnInit(c) {
			return false
		}
	}
	return len(cmds) > 0
}

// isBlocking reports whether cmd can block on the server. (The first letter
// is looked at first: this runs for every command of a shared lane.)
func isBlocking(cmd redis.Cmder) bool {
	args := cmd.Args()
	name := cmdName(args)
	if len(name) < 4 {
		return false
	}
	switch name[0] {
	case 'b', 'B':
		return isBlockingPop(name)
	case 'w', 'W':
		// WAIT with a timeout is a bounded command, like any slow one: a
		// write followed by WAIT on the same connection (a pipeline) is
		// how a caller learns that replicas have it. WAIT 0 waits for
		// ever.
		return isWait(name) && !positiveArg(args[len(args)-1])
	case 'x', 'X':
		return isStreamRead(name) && hasBlockOption(args[1:])
	}
	return false
}

// connMode returns the mode a command would leave its connection in
// ("subscribe" or "monitor"), or "". Once the command returns, go-redis
// puts that connection back in the lane's pool, where the next caller would
// read messages as replies.
func connMode(cmd redis.Cmder) string {
	name := cmdName(cmd.Args())
	if len(name) < 7 {
		return ""
	}
	switch name[0] {
	case 's', 'S', 'p', 'P':
		if strings.EqualFold(name, "subscribe") || strings.EqualFold(name, "psubscribe") || strings.EqualFold(name, "ssubscribe") {
			return "subscribe"
		}
	case 'm', 'M':
		if strings.EqualFold(name, "monitor") {
			return "monitor"
		}
	}
	return ""
}

// modeAdvice says where a command that leaves its connection in mode runs.
func modeAdvice(mode string) string {
	if mode == "subscribe" {
		return "subscribe on a reservation: Pool.ReserveBlocking, then Reservation.Subscribe (a go-redis PubSub)"
	}
	return "run it on a reservation's client (Pool.ReserveBlocking)"
}

var blockingPops = [...]string{"blpop", "brpop", "blmove", "brpoplpush", "blmpop", "bzpopmin", "bzpopmax", "bzmpop"}

func isBlockingPop(name string) bool {
	for _, b := range blockingPops {
		if strings.EqualFold(name, b) {
			return true
		}
	}
	return false
}

func isWait(name string) bool {
	return strings.EqualFold(name, "wait") || strings.EqualFold(name, "waitaof")
}

func isStreamRead(name string) bool {
	return strings.EqualFold(name, "xread") || strings.EqualFold(name, "xreadgroup")
}

// hasBlockOption reports whether the arguments of an XREAD or XREADGROUP
// (after its name) hold the BLOCK option, in any case. Options come before
// STREAMS; after it are key names and IDs, and a stream (like a group or a
// consumer) may be called "block". Any BLOCK blocks: BLOCK 0 for ever.
func hasBlockOption(args []any) bool {
	for i := 0; i < len(args); i++ {
		s, _ := args[i].(string)
		switch {
		case strings.EqualFold(s, "block"):
			return true
		case strings.EqualFold(s, "streams"):
			return false
		case strings.EqualFold(s, "group"):
			i += 2 // the group and the consumer
		case strings.EqualFold(s, "count"), strings.EqualFold(s, "claim"):
			i++
		}
	}
	return false
}

// waitTooLong refuses a WAIT or WAITAOF whose timeout is not under the
// lane's readTimeout: go-redis reads its reply (in a pipeline, always) with
// that read deadline, so replicas slow to acknowledge would end it in an I/O
// timeout, which counts toward marking a healthy Redis down, after the write
// before it was sent. Refused, nothing is sent.
func waitTooLong(cmd redis.Cmder, lane string, readTimeout time.Duration) error {
	args := cmd.Args()
	if len(args) < 2 || !isWait(cmdName(args)) {
		return nil
	}
	ms, ok := intArg(args[len(args)-1])
	// ms*time.Millisecond would overflow for a large ms: compare with
	// readTimeout in whole milliseconds, rounded up.
	if !ok || readTimeout <= 0 || ms < int64((readTimeout+time.Millisecond-1)/time.Millisecond) {
		return nil
	}
	return fmt.Errorf("%w: %s with a timeout of %dms on the %s lane: the timeout must be under the pool's ReadTimeout (%s), which bounds the wait for its reply",
		ErrBlockingCommand, strings.ToUpper(cmdName(args)), ms, lane, readTimeout)
}

// positiveArg reports whether a command argument is a positive integer.
func positiveArg(a any) bool {
	n, ok := intArg(a)
	return ok && n > 0
}

// intArg returns a command argument that is an integer, of any integer
// type or a decimal string. A uint64 beyond the int64 range reads as the
// largest int64: it is positive, and no timeout is that long.
func intArg(a any) (int64, bool) {
	switch v := a.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case int32:
		return int64(v), true
	case int16:
		return int64(v), true
	case int8:
		return int64(v), true
	case uint:
		return clampUint(uint64(v)), true
	case uint64:
		return clampUint(v), true
	case uint32:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint8:
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return 0, false
}

func clampUint(v uint64) int64 {
	return int64(min(v, math.MaxInt64))
}
