package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

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

	claims claims // names held by components (Claim)
}

// lane is a shared lane: one go-redis client behind one gate.
type lane struct {
	name   string
	gate   *gate
	counts laneCounters
	client redis.UniversalClient
	dials  dialCounter
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
	if p.request, err = p.newLane(LaneRequest, cfg.Request); err != nil {
		return nil, err
	}
	if p.background, err = p.newLane(LaneBackground, cfg.Background); err != nil {
		_ = p.request.client.Close()
		return nil, err
	}
	return p, nil
}

func (p *Pool) newLane(name string, lc LaneConfig) (*lane, error) {
	l := &lane{name: name}
	l.gate = newGate(name, "", lc, &l.counts)
	dials := dialCounters{&l.dials}
	opts := laneOptions(p.base, p.cfg.ClientName+"-"+name, lc.Size, lc.MaxWait+p.cfg.DialTimeout)
	if opts.MasterName != "" {
		opts.Dialer = sentinelDialer(opts, dials)
	}
	l.client = redis.NewUniversalClient(opts)
	admit := p.health.admitLane
	if name == LaneRequest {
		admit = p.health.admitCommand // the request lane fails fast while Redis is down
	}
	err := addLaneHook(l.client, &laneHook{
		gate:        l.gate,
		dials:       dials,
		health:      p.health,
		admit:       admit,
		noBlocking:  true,
		readTimeout: opts.ReadTimeout,
		id:          laneIdentity(opts),
	}, p.cfg.Hooks, p.cfg.Instrument)
	if err != nil {
		_ = l.client.Close()
		return nil, err
	}
	return l, nil
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
// Config.ProbeInterval), ErrUnavailable otherwise. A component calls it
// first to choose its fallback before trying Redis (ratelimit does, through
// AdmitContext; the cache relies on the request lane's own check, which
// fails its command fast instead). It claims nothing: while Redis is down the probe is the
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
