package queue

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// Consumer is this process as a consumer of one namespace's queues: its
// ConsumerID, and ONE heartbeat and one sweeper of dead consumers, whatever
// the number of queues and workers. Build one per process and namespace
// with NewConsumer and give it to every NewWorker: the workers share its
// heartbeat, so its settings hold for all of them by construction.
//
// The heartbeat and the sweeper run on the lifecycle group of the workers,
// from the first worker's Start until the group closes and the last worker
// has drained; all workers of a Consumer are started on one group. A
// Consumer holds no resources between runs, so it needs no closing. It is
// safe for concurrent use. The zero value is not usable.
type Consumer struct {
	p   *pool.Pool
	cfg ConsumerConfig

	mu   sync.Mutex
	node *node // the running heartbeat; nil while no worker runs
}

// NewConsumer validates cfg and returns the consumer for the Redis behind
// p. It does not talk to Redis; the first worker's Start does. Invalid
// settings fail with an error wrapping ErrInvalidConfig.
func NewConsumer(p *pool.Pool, cfg ConsumerConfig) (*Consumer, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: NewConsumer: nil pool", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Consumer{p: p, cfg: cfg}, nil
}

// ID returns the consumer's ID (ConsumerConfig.ConsumerID, or the one
// NewConsumer chose).
func (c *Consumer) ID() string { return c.cfg.ConsumerID }

// Namespace returns the namespace of the queues the consumer consumes.
func (c *Consumer) Namespace() string { return c.cfg.Namespace }

// accepts checks, for NewWorker, that q can be consumed by c: same pool
// (the heartbeat must live in the Redis of the jobs it protects) and same
// namespace (the heartbeat key is the namespace's).
func (c *Consumer) accepts(q *Queue) error {
	e := check.New(ErrInvalidConfig)
	if q.p != c.p {
		e.Addf("queue %q is on another pool than the consumer: a heartbeat protects the jobs of its own Redis only", q.name)
	}
	if q.cfg.Namespace != c.cfg.Namespace {
		e.Addf("queue %q is in namespace %q, the consumer in %q (ConsumerConfig.Namespace)", q.name, q.cfg.Namespace, c.cfg.Namespace)
	}
	return e.Err()
}

// heartbeatOn returns the consumer's running heartbeat, making one on g
// (with a fresh incarnation token) when none runs; log is the logger of the
// worker starting it, for a consumer without a Logger of its own. The
// heartbeat of a running consumer stays on the group it started on. A
// consumer ID runs once per pool and namespace in a process: a second
// Consumer with the same ID would write its own incarnation token over the
// first's, and the first's queues would look like a previous life of the
// ID, their running jobs swept and run twice. The pool, which both
// Consumers share, holds the claim (pool.Claim): two pools on one Redis
// are not told apart, as two processes are not.
func (c *Consumer) heartbeatOn(g *lifecycle.Group, log *slog.Logger) (*node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.node == nil {
		n := newNode(c, g, log)
		release, ok := c.p.Claim(fmt.Sprintf("queue: consumer %q of namespace %q", c.cfg.ConsumerID, c.cfg.Namespace))
		if !ok {
			return nil, fmt.Errorf("consumer ID %q already runs in this process on another Consumer of namespace %q: give each Consumer its own ConsumerID, or share one Consumer", c.cfg.ConsumerID, c.cfg.Namespace)
		}
		n.unclaim = release
		if c.cfg.Control {
			if err := n.reserveControl(); err != nil {
				release()
				return nil, err
			}
		}
		c.node = n
	}
	if c.node.g != g {
		return nil, fmt.Errorf("consumer %q runs its heartbeat on another lifecycle group: start every worker of a Consumer on one group", c.cfg.ConsumerID)
	}
	return c.node, nil
}

// forget drops n if it is still the consumer's heartbeat: it stopped, or it
// never started. The next Start makes a new one.
func (c *Consumer) forget(n *node) {
	c.mu.Lock()
	if c.node == n {
		c.node = nil
	}
	if n.unclaim != nil {
		n.unclaim() // a second call does nothing
	}
	n.releaseControl()
	c.mu.Unlock()
}

// defaultConsumerID names a process: hostname-pid-random.
func defaultConsumerID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	id := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newID(time.Now())[8:])
	if check.Name("consumer ID", id) != nil {
		id = fmt.Sprintf("host-%d-%s", os.Getpid(), newID(time.Now())[8:])
	}
	return id
}
