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

// identity is what the pool itself sets up on a lane's new connection:
// go-redis sends HELLO 3 (AUTH username password, SETNAME name), falls back
// to AUTH, then SELECT db and CLIENT SETNAME name, all through the lane's
// hooks (see isConnInit).
type identity struct {
	protocol           int // 0 or 3, or 2 for a reservation made with ReserveOptions.Protocol 2
	db                 int
	username, password string
	name               string // the lane's CLIENT SETNAME
}

// laneIdentity is the identity of the connections of a lane's options.
func laneIdentity(o *redis.UniversalOptions) identity {
	return identity{protocol: o.Protocol, db: o.DB, username: o.Username, password: o.Password, name: o.ClientName}
}

// refusedEverywhere returns ErrRefusedCommand for a command no lane sends,
// a reservation neither, or nil. within is "" or " in a pipeline"; id is
// what the pool sets up on the lane's connections.
//
//   - CLIENT PAUSE pauses every client of the server, the pool's own
//     included (CLIENT UNPAUSE passes: it is the way out of a pause).
//   - SELECT, AUTH, HELLO and CLIENT SETNAME that set up anything else than
//     id (another database, user, protocol or name) would leave the
//     connection, back in the lane's pool, changed for its later callers.
//     go-redis sends id's own through the hooks on every new connection;
//     those, sent again, change nothing. Errors never quote credentials.
func refusedEverywhere(cmd redis.Cmder, within, lane string, id *identity) error {
	args := cmd.Args()
	name := cmdName(args)
	switch len(name) {
	case 4:
		if strings.EqualFold(name, "auth") && !id.sameAuth(args[1:]) {
			return fmt.Errorf("%w: AUTH%s on the %s lane with other credentials than the pool's would leave a pooled connection logged in as another user for its later callers; use a Pool with those Config.Username and Config.Password",
				ErrRefusedCommand, within, lane)
		}
	case 5:
		if strings.EqualFold(name, "hello") && !id.sameHello(args[1:]) {
			return fmt.Errorf("%w: HELLO%s on the %s lane with another protocol, credentials or name than the pool's (RESP%d, Config.Username/Password, %q) would change a pooled connection for its later callers",
				ErrRefusedCommand, within, lane, id.proto(), id.name)
		}
	case 6:
		if len(args) < 2 {
			return nil
		}
		return refused6(name, args, within, lane, id)
	}
	return nil
}

// refused6 is refusedEverywhere for CLIENT and SELECT.
func refused6(name string, args []any, within, lane string, id *identity) error {
	switch name[0] {
	case 'c', 'C':
		if !strings.EqualFold(name, "client") {
			return nil
		}
		sub, _ := args[1].(string)
		if strings.EqualFold(sub, "pause") {
			return fmt.Errorf("%w: CLIENT PAUSE%s on the %s lane would pause every client of the server, this pool's callers included; send it from a client of its own, outside the pool",
				ErrRefusedCommand, within, lane)
		}
		if strings.EqualFold(sub, "setname") && !(len(args) == 3 && isString(args[2], id.name)) {
			return fmt.Errorf("%w: CLIENT SETNAME%s on the %s lane would rename a pooled connection (%q) for its later callers; set Config.ClientName",
				ErrRefusedCommand, within, lane, id.name)
		}
	case 's', 'S':
		if !strings.EqualFold(name, "select") {
			return nil
		}
		if n, ok := intArg(args[1]); ok && n == int64(id.db) && len(args) == 2 {
			return nil
		}
		return fmt.Errorf("%w: SELECT %v%s on the %s lane would leave a pooled connection on another database than the pool's (%d) for its later callers; use a Pool with that Config.DB",
			ErrRefusedCommand, args[1], within, lane, id.db)
	}
	return nil
}

// sameAuth reports whether AUTH's arguments (after its name) log in as id:
// AUTH password for the default user, AUTH username password otherwise.
func (id *identity) sameAuth(args []any) bool {
	switch len(args) {
	case 1:
		return id.username == "" && id.password != "" && isString(args[0], id.password)
	case 2:
		return id.sameUser(args[0], args[1])
	}
	return false
}

// sameUser reports whether user and password are id's (go-redis names the
// user "default" when id has none).
func (id *identity) sameUser(user, password any) bool {
	if id.password == "" || !isString(password, id.password) {
		return false
	}
	if id.username == "" {
		return isString(user, "default")
	}
	return isString(user, id.username)
}

// sameHello reports whether HELLO's arguments (after its name) keep id:
// id's protocol (3, or none: HELLO alone only reports), and AUTH and
// SETNAME, if given, id's own.
func (id *identity) sameHello(args []any) bool {
	if len(args) == 0 {
		return true
	}
	if v, ok := intArg(args[0]); !ok || v != int64(id.proto()) {
		return false
	}
	for i := 1; i < len(args); {
		opt, _ := args[i].(string)
		switch {
		case strings.EqualFold(opt, "auth") && i+2 < len(args):
			if !id.sameUser(args[i+1], args[i+2]) {
				return false
			}
			i += 3
		case strings.EqualFold(opt, "setname") && i+1 < len(args):
			if !isString(args[i+1], id.name) {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return true
}

// proto is id's protocol; zero means 3.
func (id *identity) proto() int {
	if id.protocol == 0 {
		return 3
	}
	return id.protocol
}

// isString reports whether a command argument is the string s.
func isString(a any, s string) bool {
	v, ok := a.(string)
	return ok && v == s
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
