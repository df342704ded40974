package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reservation is a share of the blocking lane held by one component (a queue's
// fetcher, a cache's invalidation subscriber). Its client opens at most Size()
// connections, which no other component can take; blocking commands and
// subscriptions belong here and nowhere else.
//
// A reservation serves either commands (blocking or not, on Client) or
// subscriptions (Subscribe), whichever it is used for first: go-redis keeps
// Pub/Sub connections in a pool of their own, so a reservation doing both
// could open more than Size sockets. The other use fails with
// ErrReservationUse.
//
// A Reservation is safe for concurrent use. Its owner calls Release when the
// component stops; Pool.Close releases what is left.
type Reservation struct {
	p      *Pool
	owner  string
	n      int
	gate   *gate
	client redis.UniversalClient
	dials  dialCounter
	use    atomic.Int32 // useNone, then useCommands or useSubscriptions for good

	mu       sync.Mutex
	released bool
}

// ReserveBlocking sets aside n connections of the blocking lane for owner and
// returns a client limited to them. It is meant to be called when a component
// is built or started, so a budget that cannot work (more blocking consumers
// than the lane holds) is refused at once, with an error naming the lane, its
// size and who holds the rest, instead of being discovered under load.
func (p *Pool) ReserveBlocking(owner string, n int) (*Reservation, error) {
	return p.ReserveBlockingWith(owner, n, ReserveOptions{})
}

// ReserveBlockingWith is ReserveBlocking with options for the reservation's
// connections (see ReserveOptions).
func (p *Pool) ReserveBlockingWith(owner string, n int, ro ReserveOptions) (*Reservation, error) {
	if strings.TrimSpace(owner) == "" {
		return nil, errors.New("pool: ReserveBlocking: owner must not be empty")
	}
	if n < 1 {
		return nil, fmt.Errorf("pool: ReserveBlocking(%q): n must be at least 1, got %d", owner, n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("%w: ReserveBlocking(%q)", ErrClosed, owner)
	}
	if err := p.fitsBudget(owner, n); err != nil {
		return nil, err
	}
	r := &Reservation{p: p, owner: owner, n: n}
	// No max wait: a reservation's callers are its owner's, bounded by
	// their contexts.
	r.gate = newGate(LaneBlocking, owner, LaneConfig{Size: n, MaxWaiters: DefaultWaitersPerConn * max(p.blockingSize, 1)}, &p.blockStats)
	name := p.cfg.ClientName + "-blocking-" + sanitizeName(owner)
	// The pool timeout only bounds a dial that outlives its caller: the gate
	// keeps go-redis from ever waiting for one of these connections.
	opts := laneOptions(p.base, name, n, p.cfg.DialTimeout+time.Second)
	if err := ro.apply(opts); err != nil {
		return nil, fmt.Errorf("pool: ReserveBlocking(%q): %w", owner, err)
	}
	dials := dialCounters{&p.blockDials, &r.dials}
	if opts.MasterName != "" {
		opts.Dialer = sentinelDialer(opts, dials)
	}
	r.client = redis.NewUniversalClient(opts)
	err := addLaneHook(r.client, &laneHook{
		gate:   r.gate,
		dials:  dials,
		health: p.health,
		admit:  p.health.admitLane,
		claim:  func() error { return r.claim(useCommands) },
		id:     laneIdentity(opts),
	}, p.cfg.Hooks, p.cfg.Instrument)
	if err != nil {
		_ = r.client.Close()
		return nil, err
	}
	p.reservations = append(p.reservations, r)
	return r, nil
}

// fitsBudget returns ErrOverBudget, naming who holds the blocking lane, if
// n more connections would not fit in it. p.mu is held.
func (p *Pool) fitsBudget(owner string, n int) error {
	held := 0
	holders := make([]string, 0, len(p.reservations))
	for _, r := range p.reservations {
		held += r.n
		holders = append(holders, fmt.Sprintf("%s=%d", r.owner, r.n))
	}
	if held+n <= p.blockingSize {
		return nil
	}
	who := "nobody"
	if len(holders) > 0 {
		who = strings.Join(holders, ", ")
	}
	return fmt.Errorf("%w: %q asks for %d connection(s) but the blocking lane has %d of %d left (held by %s); raise Config.Blocking.Size",
		ErrOverBudget, owner, n, p.blockingSize-held, p.blockingSize, who)
}

// What a reservation is used for; see Reservation.
const (
	useNone int32 = iota
	useCommands
	useSubscriptions
)

// claim settles the reservation's use on the first call and refuses the
// other one afterwards.
func (r *Reservation) claim(use int32) error {
	if r.use.CompareAndSwap(useNone, use) || r.use.Load() == use {
		return nil
	}
	if use == useCommands {
		return fmt.Errorf("%w: %q holds subscriptions; run commands on another reservation", ErrReservationUse, r.owner)
	}
	return fmt.Errorf("%w: %q runs commands; subscribe on another reservation", ErrReservationUse, r.owner)
}

// Owner returns the name the reservation was made for.
func (r *Reservation) Owner() string { return r.owner }

// Size returns the number of connections reserved.
func (r *Reservation) Size() int { return r.n }

// Client returns the reservation's client. At most Size() commands run on it
// at once; a caller beyond that waits, bounded by its context. The client
// belongs to the reservation: do not Close it, call Release.
func (r *Reservation) Client() redis.UniversalClient { return r.client }

// Subscription is a Pub/Sub subscription that holds one of its reservation's
// connections until it is closed.
type Subscription struct {
	*redis.PubSub
	r    *Reservation
	once sync.Once
}

// Subscribe subscribes to channels on a connection of the reservation. The
// subscription occupies one of the reservation's Size() connections until
// Close; if none is free it waits, bounded by ctx. Read messages with
// ReceiveMessage from a lifecycle task rather than PubSub.Channel, which
// starts goroutines of go-redis's own.
func (r *Reservation) Subscribe(ctx context.Context, channels ...string) (*Subscription, error) {
	if len(channels) == 0 {
		return nil, fmt.Errorf("pool: %s: Subscribe needs at least one channel", r.owner)
	}
	if r.isReleased() {
		return nil, fmt.Errorf("%w: reservation %q was released", ErrClosed, r.owner)
	}
	if err := r.claim(useSubscriptions); err != nil {
		return nil, err
	}
	if err := r.p.health.admitLane(ctx); err != nil {
		return nil, err
	}
	if err := r.gate.acquire(ctx); err != nil {
		return nil, err
	}
	ps := r.client.Subscribe(ctx, channels...)
	// Subscribe returns before the connection is confirmed; wait for the
	// server's confirmation so a subscription that exists has really started.
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		r.gate.release()
		r.p.health.observe(ctx, err)
		return nil, fmt.Errorf("pool: %s: subscribe %s: %w", r.owner, strings.Join(channels, " "), err)
	}
	r.p.health.observe(ctx, nil)
	return &Subscription{PubSub: ps, r: r}, nil
}

// Close closes the subscription and gives its connection back to the
// reservation. It is idempotent.
func (s *Subscription) Close() error {
	var err error
	s.once.Do(func() {
		err = s.PubSub.Close()
		s.r.gate.release()
	})
	return err
}

func (r *Reservation) isReleased() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.released
}

// Release closes the reservation's client and returns its connections to the
// blocking lane. Commands still running on it fail. It is idempotent.
func (r *Reservation) Release() error {
	r.mu.Lock()
	if r.released {
		r.mu.Unlock()
		return nil
	}
	r.released = true
	r.mu.Unlock()

	err := r.client.Close()
	r.p.mu.Lock()
	r.p.reservations = slices.DeleteFunc(r.p.reservations, func(x *Reservation) bool { return x == r })
	r.p.mu.Unlock()
	if err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("pool: releasing reservation %q: %w", r.owner, err)
	}
	return nil
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
