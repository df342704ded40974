package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lane names, as they appear in Stats and errors.
const (
	LaneRequest    = "request"
	LaneBackground = "background"
	LaneBlocking   = "blocking"
)

// Pool is the Redis connection budget of a process: a request lane for short
// commands on the request path, a background lane for components'
// bookkeeping, and a blocking lane handed out only in reservations.
//
// A Pool has no useful zero value; build it with New. It is safe for
// concurrent use. The service that builds it shares it with every component
// and closes it last (after the lifecycle group that owns the components'
// tasks), with Close.
type Pool struct {
	cfg    Config
	base   *redis.UniversalOptions
	health *health

	request    *lane
	background *lane

	mu           sync.Mutex
	blockingSize int
	reservations []*Reservation
	blockDials   dialCounter  // dials and sockets of all reservations' clients
	blockStats   laneCounters // waits of all reservations' gates
	closed       bool
}

// lane is a shared lane: one go-redis client behind one gate.
type lane struct {
	name   string
	gate   *gate
	counts laneCounters
	client redis.UniversalClient
	dials  dialCounter
}

// dialCounter counts dials and the sockets they opened that are still open.
type dialCounter struct {
	dials        atomic.Uint64
	dialErrors   atomic.Uint64
	open         atomic.Int64
	sentinelOpen atomic.Int64 // Redis Sentinel: sockets to sentinels (see sentinelDialer)
}

// New builds a pool. It does not connect: connections open on first use, so
// New fails only on bad configuration.
func New(cfg Config) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pool{
		cfg:  cfg,
		base: cfg.universalOptions(),
		health: &health{
			threshold: int64(cfg.FailureThreshold),
			interval:  cfg.ProbeInterval,
			now:       cfg.Now,
			log:       cfg.Logger,
			since:     cfg.Now(),
		},
		blockingSize: cfg.Blocking.Size,
	}
	p.request = p.newLane(LaneRequest, cfg.Request)
	p.background = p.newLane(LaneBackground, cfg.Background)
	return p, nil
}

func (p *Pool) newLane(name string, lc LaneConfig) *lane {
	l := &lane{name: name}
	l.gate = newGate(name, "", lc.Size, lc.MaxWait, lc.MaxWaiters, &l.counts)
	opts := laneOptions(p.base, p.cfg.ClientName+"-"+name, lc.Size, lc.MaxWait+p.cfg.DialTimeout)
	if opts.MasterName != "" {
		opts.Dialer = sentinelDialer(opts, &l.dials)
	}
	l.client = redis.NewUniversalClient(opts)
	addLaneHook(l.client, &laneHook{
		gate:        l.gate,
		dials:       &l.dials,
		health:      p.health,
		admit:       name == LaneRequest,
		noBlocking:  true,
		readTimeout: opts.ReadTimeout,
	})
	return l
}

// addLaneHook puts h in front of c. A Redis Cluster client never runs its
// own hooks' DialHook: each node has a client of its own that dials, so the
// dial counting goes on every node client as it is created. And a cluster
// client looks up the slot map again only on MOVED or once a minute; after
// a connection failure h has it reloaded, so a master that died and was
// replaced is found within the cluster's node timeout, not a minute later.
func addLaneHook(c redis.UniversalClient, h *laneHook) {
	if cc, ok := c.(*redis.ClusterClient); ok {
		h.reload = func() { cc.ReloadState(context.Background()) }
		cc.OnNewNode(func(node *redis.Client) { node.AddHook(nodeDialHook{h}) })
	}
	c.AddHook(h)
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

// Client returns the request lane: a go-redis client for short commands on
// the request path. At most Config.Request.Size commands (or pipelines) run
// at once; the next callers wait up to Config.Request.MaxWait and their own
// context, and past Config.Request.MaxWaiters are refused at once. A wait
// that cannot be served fails with a *LaneError (ErrLaneExhausted).
//
// While Redis is marked down (see Admit), calls fail at once with
// ErrUnavailable except the periodic probe. Blocking commands fail with
// ErrBlockingCommand; use ReserveBlocking. Two go-redis calls escape the
// lane's count, and do not belong on it: Subscribe (and PSubscribe,
// SSubscribe) opens a socket of go-redis's separate Pub/Sub pool, beyond
// Size, so subscribe on a reservation (Reservation.Subscribe); and Watch
// keeps one connection for the whole of its function while the lane counts
// it only during each command, so prefer a Lua script or a TxPipeline.
//
// The client belongs to the pool: do not Close it.
func (p *Pool) Client() redis.UniversalClient { return p.request.client }

// Background returns the background lane, for components' work off the
// request path (acks, scheduling, heartbeats). It works like Client but does
// not fail fast while Redis is down: its users back off on their own.
func (p *Pool) Background() redis.UniversalClient { return p.background.client }

// Admit reports whether a call to Redis should be attempted now, in well
// under a microsecond and with no background poller (the state follows the
// outcome of real commands): nil while Redis is believed reachable, and
// while it is believed down, nil only when a probe is due (one per
// Config.ProbeInterval), ErrUnavailable otherwise. Components call it first
// to choose a fallback (a local cache hit, a rate-limit policy) before
// trying Redis. It claims nothing: while Redis is down the probe is the
// first request-lane command that asks for it, and the others fail with
// ErrUnavailable, so a caller that Admit let through may still get
// ErrUnavailable from its command. A caller that needs its own command to
// be the probe uses AdmitContext.
func (p *Pool) Admit() error { return p.health.admit() }

// AdmitContext is Admit for a caller that sends its command next: while
// Redis is believed down and a probe is due, it claims the probe and
// returns a context carrying it, and the first request-lane command (or
// pipeline) sent with that context is let through as the probe. No other
// caller's command can spend it, and it is spent once. While Redis is up it
// returns ctx itself; otherwise ctx and ErrUnavailable.
func (p *Pool) AdmitContext(ctx context.Context) (context.Context, error) {
	return p.health.admitContext(ctx)
}

// Healthy reports whether Redis is believed reachable. It has no side effect.
func (p *Pool) Healthy() bool { return !p.health.down.Load() }

// Health returns the health state with the failure that caused it.
func (p *Pool) Health() Health { return p.health.snapshot() }

// IsCluster reports whether the pool talks to a Redis Cluster.
func (p *Pool) IsCluster() bool {
	_, ok := p.request.client.(*redis.ClusterClient)
	return ok
}

// Ping sends PING through the request lane.
func (p *Pool) Ping(ctx context.Context) error {
	if err := p.request.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("pool: ping: %w", err)
	}
	return nil
}

// Close closes every client of the pool, reservations included. Components
// using the pool must be stopped first. Close is idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	res := slices.Clone(p.reservations)
	p.mu.Unlock()

	var errs []error
	for _, r := range res {
		if err := r.Release(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range []*lane{p.request, p.background} {
		if err := l.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			errs = append(errs, fmt.Errorf("pool: closing %s lane: %w", l.name, err))
		}
	}
	return errors.Join(errs...)
}

// sanitizeName makes s usable in CLIENT SETNAME (no spaces or newlines).
func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}

// laneHook puts a lane's gate, health tracking and dial counting in front of
// a go-redis client.
type laneHook struct {
	gate        *gate
	dials       *dialCounter // the lane's counters
	extraDials  *dialCounter // the reservation's own, if any
	health      *health
	admit       bool          // fail fast while Redis is down
	noBlocking  bool          // refuse blocking commands
	readTimeout time.Duration // the lane's socket read timeout (noBlocking lanes)
	claim       func() error  // a reservation: commands may run on it (see Reservation.use)
	reload      func()        // Redis Cluster: reload the slot map (in the background, coalesced)
}

// observe feeds the outcome of a command to the health state.
func (h *laneHook) observe(ctx context.Context, err error) {
	o := h.health.observe(ctx, err)
	if o == outcomeDown && h.reload != nil {
		h.reload()
	}
}

func (h *laneHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.dials.dials.Add(1)
		if h.extraDials != nil {
			h.extraDials.dials.Add(1)
		}
		c, err := next(ctx, network, addr)
		if err != nil {
			h.dials.dialErrors.Add(1)
			if h.extraDials != nil {
				h.extraDials.dialErrors.Add(1)
			}
			return nil, err
		}
		c = toLane(c)
		h.dials.open.Add(1)
		if h.extraDials != nil {
			h.extraDials.open.Add(1)
		}
		cc := &countedConn{Conn: c, h: h}
		if sc, ok := c.(syscall.Conn); ok {
			return &countedSysConn{countedConn: cc, sc: sc}, nil
		}
		return cc, nil
	}
}

// countedConn decrements the open-socket count once, when go-redis closes it.
type countedConn struct {
	net.Conn
	h    *laneHook
	once sync.Once
}

// NetConn returns the wrapped connection, as crypto/tls.Conn does.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// countedSysConn keeps syscall.Conn visible through the wrapper: go-redis
// peeks at an idle socket through it before reusing it, which is how a
// connection that went stale in a Redis restart is dropped instead of
// failing the next command. (A TLS connection does not expose it, and
// go-redis deliberately does not look beneath TLS; neither do we.)
type countedSysConn struct {
	*countedConn
	sc syscall.Conn
}

func (c *countedSysConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.h.dials.open.Add(-1)
		if c.h.extraDials != nil {
			c.h.extraDials.open.Add(-1)
		}
	})
	return c.Conn.Close()
}

func (h *laneHook) enter(ctx context.Context) error {
	if h.claim != nil {
		if err := h.claim(); err != nil {
			return err
		}
	}
	if h.admit {
		if err := h.health.admitCommand(ctx); err != nil {
			return err
		}
	} else if err := h.health.admitLane(ctx); err != nil {
		return err
	}
	return h.gate.acquire(ctx)
}

func (h *laneHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isConnInit(cmd) {
			return next(ctx, cmd)
		}
		if h.noBlocking && isBlocking(cmd) {
			err := fmt.Errorf("%w: %s on the %s lane; reserve blocking connections with ReserveBlocking",
				ErrBlockingCommand, strings.ToUpper(cmd.Name()), h.gate.lane)
			cmd.SetErr(err)
			return err
		}
		if h.noBlocking {
			if err := h.waitTooLong(cmd); err != nil {
				cmd.SetErr(err)
				return err
			}
		}
		if err := h.enter(ctx); err != nil {
			cmd.SetErr(err)
			return err
		}
		markEntered(ctx, time.Now())
		// A panic in go-redis (an argument whose MarshalBinary panics is
		// re-panicked after the connection is dropped) must not keep the
		// slot: a recovered panic would shrink the lane for good.
		held := true
		defer func() {
			if held {
				h.gate.release()
			}
		}()
		err := next(ctx, cmd)
		if errors.Is(err, redis.ErrPoolExhausted) {
			err = h.waitForConn(ctx, func() (bool, error) {
				cmd.SetErr(nil)
				err := next(ctx, cmd)
				return errors.Is(err, redis.ErrPoolExhausted), err
			})
			if le := (*LaneError)(nil); errors.As(err, &le) {
				cmd.SetErr(err)
			}
		}
		held = false
		h.gate.release()
		if e := callerTimeout(ctx, err); e != err {
			err = e
			cmd.SetErr(err)
		}
		h.observe(ctx, err)
		return err
	}
}

// waitForConn handles go-redis's "pool exhausted", which the gate should make
// impossible but for two cases: a dial whose caller gave up goes on in
// go-redis's own goroutine, holding a connection slot, and the next caller
// through the gate finds the pool full until it lands; and on Redis Cluster
// go-redis sends commands of its own (CLUSTER SLOTS when it reloads the slot
// map) on a node's connections, outside the gate. Nothing was sent yet, so
// the call is tried again after short pauses, within the lane's max wait and
// the caller's context, for as long as call says so; if it still cannot get
// a connection it fails with a LaneError like any other wait.
func (h *laneHook) waitForConn(ctx context.Context, call func() (again bool, err error)) error {
	start := time.Now()
	pause := time.Millisecond
	for {
		expired := h.gate.maxWait > 0 && time.Since(start)+pause > h.gate.maxWait
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < pause {
			expired = true
		}
		if expired {
			return h.gate.errorf(context.DeadlineExceeded,
				"go-redis's pool was full (a dial its caller abandoned, or go-redis's own cluster bookkeeping)", time.Since(start))
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return h.gate.errorf(ctx.Err(), "the caller's context ended while a connection was being dialled", time.Since(start))
		case <-t.C:
		}
		again, err := call()
		if !again {
			return err
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

func (h *laneHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if allConnInit(cmds) {
			return next(ctx, cmds)
		}
		if h.noBlocking {
			for _, cmd := range cmds {
				if isBlocking(cmd) {
					err := fmt.Errorf("%w: %s in a pipeline on the %s lane", ErrBlockingCommand,
						strings.ToUpper(cmd.Name()), h.gate.lane)
					setErrs(cmds, err)
					return err
				}
				if err := h.waitTooLong(cmd); err != nil {
					setErrs(cmds, err)
					return err
				}
			}
		}
		if err := h.enter(ctx); err != nil {
			setErrs(cmds, err)
			return err
		}
		markEntered(ctx, time.Now())
		held := true // see ProcessHook
		defer func() {
			if held {
				h.gate.release()
			}
		}()
		err := next(ctx, cmds)
		if unsent := unsentCmds(cmds); unsent != nil {
			err = h.resendUnsent(ctx, next, cmds, unsent)
		}
		held = false
		h.gate.release()
		if e := callerTimeout(ctx, err); e != err {
			err = e
			for _, c := range cmds {
				if c.Err() != nil {
					c.SetErr(callerTimeout(ctx, c.Err()))
				}
			}
		}
		h.observe(ctx, pipelineHealthErr(err, cmds))
		return err
	}
}

// resendUnsent sends again, after short pauses (see waitForConn), the
// commands of a pipeline that go-redis could not send for want of a
// connection, and only those. On Redis Cluster a pipeline is split by node
// and each node's part runs on its own: the part for one node may find that
// node's pool full while the others have already run, and sending the whole
// pipeline again would run them twice. A part still unsent when the wait
// ends fails with the LaneError; the commands that ran keep their replies.
func (h *laneHook) resendUnsent(ctx context.Context, next redis.ProcessPipelineHook, cmds, unsent []redis.Cmder) error {
	whole := len(unsent) == len(cmds)
	var last error
	err := h.waitForConn(ctx, func() (bool, error) {
		setErrs(unsent, nil)
		last = next(ctx, unsent)
		unsent = unsentCmds(unsent)
		return unsent != nil, last
	})
	if le := (*LaneError)(nil); errors.As(err, &le) {
		setErrs(unsent, err)
		return err
	}
	if whole {
		return last
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil {
			return e
		}
	}
	return nil
}

// unsentCmds returns the commands of a pipeline that go-redis failed with
// ErrPoolExhausted, which it returns before anything is written: nil if
// there are none, all of cmds if none was sent. A transaction (MULTI ...
// EXEC) goes to one node, so it is sent whole or not at all; its framing
// commands carry no error of their own on Redis Cluster and count with
// the rest. A partly sent transaction cannot be completed: nil.
func unsentCmds(cmds []redis.Cmder) []redis.Cmder {
	body := cmds
	tx := len(cmds) >= 2 && strings.EqualFold(cmds[0].Name(), "multi") && strings.EqualFold(cmds[len(cmds)-1].Name(), "exec")
	if tx {
		body = cmds[1 : len(cmds)-1]
	}
	var unsent []redis.Cmder
	for _, c := range body {
		if errors.Is(c.Err(), redis.ErrPoolExhausted) {
			unsent = append(unsent, c)
		}
	}
	switch {
	case len(unsent) == 0:
		return nil
	case len(unsent) == len(body):
		return cmds
	case tx:
		return nil
	}
	return unsent
}

// pipelineHealthErr picks the error that says most about Redis: a
// connection-level error if any command has one.
func pipelineHealthErr(err error, cmds []redis.Cmder) error {
	if err == nil {
		return nil
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil {
			var rerr redis.Error
			if !errors.As(e, &rerr) && !errors.Is(e, redis.Nil) {
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

// isConnInit reports whether cmd is one of the commands go-redis sends on a
// new connection before handing it to the caller (HELLO, AUTH, SELECT,
// READONLY, CLIENT SETNAME/SETINFO/TRACKING/MAINT_NOTIFICATIONS). go-redis
// runs them through the client's hooks while the caller that caused the dial
// already holds a slot of the gate, so they must pass without taking another:
// with every slot taken they would wait for themselves.
func isConnInit(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) == 0 {
		return false
	}
	name, _ := args[0].(string)
	switch strings.ToLower(name) {
	case "hello", "auth", "select", "readonly":
		return true
	case "client":
		if len(args) < 2 {
			return false
		}
		sub, _ := args[1].(string)
		switch strings.ToLower(sub) {
		case "setname", "setinfo", "tracking", "maint_notifications":
			return true
		}
	}
	return false
}

func allConnInit(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if !isConnInit(c) {
			return false
		}
	}
	return len(cmds) > 0
}

// positiveArg reports whether a command argument is a positive integer.
func positiveArg(a any) bool {
	n, ok := intArg(a)
	return ok && n > 0
}

// intArg returns a command argument that is an integer.
func intArg(a any) (int64, bool) {
	switch v := a.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// waitTooLong refuses a WAIT or WAITAOF whose timeout is not under the
// lane's ReadTimeout: go-redis reads its reply (in a pipeline, always) with
// that read deadline, so replicas slow to acknowledge would end it in an I/O
// timeout, which counts toward marking a healthy Redis down, after the write
// before it was sent. Refused, nothing is sent.
func (h *laneHook) waitTooLong(cmd redis.Cmder) error {
	args := cmd.Args()
	if len(args) < 2 {
		return nil
	}
	name, _ := args[0].(string)
	if !strings.EqualFold(name, "wait") && !strings.EqualFold(name, "waitaof") {
		return nil
	}
	ms, ok := intArg(args[len(args)-1])
	if !ok || h.readTimeout <= 0 || time.Duration(ms)*time.Millisecond < h.readTimeout {
		return nil
	}
	return fmt.Errorf("%w: %s with a timeout of %dms on the %s lane: the timeout must be under the pool's ReadTimeout (%s), which bounds the wait for its reply",
		ErrBlockingCommand, strings.ToUpper(name), ms, h.gate.lane, h.readTimeout)
}

// isBlocking reports whether cmd can block on the server.
func isBlocking(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) == 0 {
		return false
	}
	name, _ := args[0].(string)
	if len(name) < 4 {
		return false
	}
	switch name[0] {
	case 'b', 'B':
		switch strings.ToLower(name) {
		case "blpop", "brpop", "blmove", "brpoplpush", "blmpop", "bzpopmin", "bzpopmax", "bzmpop":
			return true
		}
	case 'w', 'W':
		switch strings.ToLower(name) {
		case "wait", "waitaof":
			// WAIT with a timeout is a bounded command, like any slow one:
			// a write followed by WAIT on the same connection (a pipeline)
			// is how a caller learns that replicas have it. WAIT 0 waits
			// for ever.
			return !positiveArg(args[len(args)-1])
		}
	case 'x', 'X':
		switch strings.ToLower(name) {
		case "xread", "xreadgroup":
			for _, a := range args[1:] {
				if s, ok := a.(string); ok && strings.EqualFold(s, "block") {
					return true
				}
			}
		}
	}
	return false
}
