package pool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// laneHook puts a lane's gate, health tracking and dial counting in front of
// a go-redis client. Both of its command hooks pass their call (one command,
// or a pipeline) through process.
type laneHook struct {
	gate   *gate
	dials  dialCounters                // the lane's counters, and a reservation's own
	health *health                     // fed the outcome of every call
	admit  func(context.Context) error // health.admitCommand (request lane: fail fast) or health.admitLane
	// noBlocking is set on the lanes every caller shares (request,
	// background): they refuse blocking commands, and WAITs whose timeout
	// is not under readTimeout, the lane's socket read timeout.
	noBlocking  bool
	readTimeout time.Duration
	// id is what the pool sets up on the lane's connections: a SELECT,
	// AUTH, HELLO or CLIENT SETNAME of anything else is refused.
	id     identity
	claim  func() error // a reservation: commands may run on it (see Reservation.use)
	reload func()       // Redis Cluster: reload the slot map (in the background, coalesced)
}

// addLaneHook adds the caller's hooks (Config.Hooks, then Config.Instrument's)
// to c, then h, so h runs
// innermost, next to the wire: a caller's hook sees every call, refused ones
// included, and cannot get one past the gate. A Redis Cluster client never
// runs its own hooks' DialHook: each node has a client of its own that
// dials, so the dial counting (and the caller's DialHooks) go on every node
// client as it is created; the node clients' command hooks are not added,
// or each command would be seen twice. And a cluster client looks up the
// slot map again only on MOVED or once a minute; after a connection failure
// h has it reloaded, so a master that died and was replaced is found within
// the cluster's node timeout, not a minute later.
func addLaneHook(c redis.UniversalClient, h *laneHook, hooks []redis.Hook, instrument func(redis.UniversalClient) error) error {
	if cc, ok := c.(*redis.ClusterClient); ok {
		h.reload = func() { cc.ReloadState(context.Background()) }
		cc.OnNewNode(func(node *redis.Client) {
			for _, u := range hooks {
				node.AddHook(dialOnly{u})
			}
			node.AddHook(nodeDialHook{h})
		})
	}
	for _, u := range hooks {
		c.AddHook(u)
	}
	if instrument != nil {
		if err := instrument(c); err != nil {
			return fmt.Errorf("pool: Config.Instrument on the %s lane: %w", h.gate.lane, err)
		}
	}
	c.AddHook(h)
	return nil
}

// dialOnly is a caller's hook on a cluster node's client: its DialHook only.
type dialOnly struct{ redis.Hook }

func (d dialOnly) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (d dialOnly) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// nodeDialHook counts a cluster node client's dials in its lane.
type nodeDialHook struct{ h *laneHook }

func (n nodeDialHook) DialHook(next redis.DialHook) redis.DialHook { return n.h.DialHook(next) }
func (nodeDialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (nodeDialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// callKind is what differs between the two kinds of call process takes
// through a lane: a command sent alone, and a pipeline.
type callKind struct {
	// blockingFormat words a shared lane's refusal of a blocking command
	// (a fmt format: ErrBlockingCommand, command, lane).
	blockingFormat string
	// modeFormat words a shared lane's refusal of a command that would
	// leave its connection in subscribe or monitor mode (ErrBlockingCommand,
	// command, lane, mode, advice).
	modeFormat string
	// within says where the command was: "" or " in a pipeline".
	within string
	// cmdErrs is set when the commands carry the errors of this call by
	// the time process looks at them: go-redis sets them in a pipeline,
	// but sets a command's own error only once the hooks have returned, so
	// a command sent alone may still carry its previous call's.
	cmdErrs bool
}

var (
	commandCall = &callKind{
		blockingFormat: "%w: %s on the %s lane; reserve blocking connections with ReserveBlocking",
		modeFormat:     "%w: %s on the %s lane would leave a pooled connection in %s mode; %s",
	}
	pipelineCall = &callKind{
		blockingFormat: "%w: %s in a pipeline on the %s lane",
		modeFormat:     "%w: %s in a pipeline on the %s lane would leave a pooled connection in %s mode; %s",
		within:         " in a pipeline",
		cmdErrs:        true,
	}
)

// healthErr picks, from a call's error and its commands, the error that
// says most about Redis.
func (k *callKind) healthErr(err error, cmds []redis.Cmder) error {
	if !k.cmdErrs {
		return err
	}
	return pipelineHealthErr(err, cmds)
}

func (h *laneHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := refusedEverywhere(cmd, commandCall.within, h.gate.lane, &h.id); err != nil {
			cmd.SetErr(err)
			return err
		}
		if isConnInit(cmd) {
			return next(ctx, cmd)
		}
		return h.process(ctx, commandCall, []redis.Cmder{cmd}, func() error {
			return h.sendCommand(ctx, next, cmd)
		})
	}
}

func (h *laneHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := refusedEverywhere(cmd, pipelineCall.within, h.gate.lane, &h.id); err != nil {
				setErrs(cmds, err)
				return err
			}
		}
		if allConnInit(cmds) {
			return next(ctx, cmds)
		}
		return h.process(ctx, pipelineCall, cmds, func() error {
			return h.sendPipeline(ctx, next, cmds)
		})
	}
}

// process takes one call (a command, or a pipeline: cmds) through the lane:
// it refuses what the lane must not carry, waits for a slot of the gate,
// sends with send while holding it, and feeds the outcome to the health
// state. A call refused or left without a slot fails with its commands
// carrying the error, and says nothing about Redis.
func (h *laneHook) process(ctx context.Context, kind *callKind, cmds []redis.Cmder, send func() error) error {
	if err := h.enter(ctx, cmds, kind); err != nil {
		setErrs(cmds, err)
		return err
	}
	err := h.holdSlot(ctx, send)
	if e := callerTimeout(ctx, err); e != err {
		err = e
		for _, c := range cmds {
			if c.Err() != nil {
				c.SetErr(callerTimeout(ctx, c.Err()))
			}
		}
	}
	h.observe(ctx, kind.healthErr(err, cmds))
	return err
}

// enter lets a call onto the lane: not refused, the reservation's use
// claimed, admitted by the health state, and a slot of the gate taken.
func (h *laneHook) enter(ctx context.Context, cmds []redis.Cmder, kind *callKind) error {
	if h.noBlocking {
		if err := h.refuse(cmds, kind); err != nil {
			return err
		}
	}
	if h.claim != nil {
		if err := h.claim(); err != nil {
			return err
		}
	}
	if err := h.admit(ctx); err != nil {
		return err
	}
	return h.gate.acquire(ctx)
}

// refuse returns ErrBlockingCommand for the first of cmds a shared lane
// must not send (see isBlocking, connMode and waitTooLong), or nil. Nothing
// is sent.
func (h *laneHook) refuse(cmds []redis.Cmder, kind *callKind) error {
	for _, cmd := range cmds {
		if isBlocking(cmd) {
			return fmt.Errorf(kind.blockingFormat, ErrBlockingCommand, strings.ToUpper(cmd.Name()), h.gate.lane)
		}
		if mode := connMode(cmd); mode != "" {
			return fmt.Errorf(kind.modeFormat, ErrBlockingCommand, strings.ToUpper(cmd.Name()), h.gate.lane, mode, modeAdvice(mode))
		}
		if err := waitTooLong(cmd, h.gate.lane, h.readTimeout); err != nil {
			return err
		}
	}
	return nil
}

// holdSlot runs send with the slot enter took, and gives it back. A panic in
// go-redis (an argument whose MarshalBinary panics is re-panicked after the
// connection is dropped) gives it back too: a recovered panic must not
// shrink the lane for good.
func (h *laneHook) holdSlot(ctx context.Context, send func() error) error {
	defer h.gate.release()
	markEntered(ctx, time.Now())
	return send()
}

// observe feeds the outcome of a call to the health state.
func (h *laneHook) observe(ctx context.Context, err error) {
	o := h.health.observe(ctx, err)
	if o == outcomeDown && h.reload != nil {
		h.reload()
	}
}

// pipelineHealthErr picks the error that says most about Redis: a
// connection-level error if any command has one.
func pipelineHealthErr(err error, cmds []redis.Cmder) error {
	if err == nil {
		return nil
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil {
			if _, reply := errors.AsType[redis.Error](e); !reply && !errors.Is(e, redis.Nil) {
				return e
			}
		}
	}
	return err
}

func setErrs(cmds []redis.Cmder, err error) {
	for _, c := range cmds {
		c.SetErr(err)
	}
}
