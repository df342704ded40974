package pool

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// dialCounter counts dials and the sockets they opened that are still open.
type dialCounter struct {
	dials        atomic.Uint64
	dialErrors   atomic.Uint64
	open         atomic.Int64
	sentinelOpen atomic.Int64 // Redis Sentinel: sockets to sentinels (see sentinelDialer)
}

// dialCounters are the counters one client's dials go to: its lane's, and a
// reservation's own.
type dialCounters []*dialCounter

func (cs dialCounters) add(f func(*dialCounter)) {
	for _, c := range cs {
		f(c)
	}
}

// DialHook counts the lane's dials and wraps each socket so that closing it
// is counted too.
func (h *laneHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.dials.add(func(d *dialCounter) { d.dials.Add(1) })
		c, err := next(ctx, network, addr)
		if err != nil {
			h.dials.add(func(d *dialCounter) { d.dialErrors.Add(1) })
			return nil, err
		}
		return h.dials.opened(toLane(c)), nil
	}
}

// opened counts c as open until go-redis closes it.
func (cs dialCounters) opened(c net.Conn) net.Conn {
	cs.add(func(d *dialCounter) { d.open.Add(1) })
	cc := &countedConn{Conn: c, counters: cs}
	if sc, ok := c.(syscall.Conn); ok {
		return &countedSysConn{countedConn: cc, sc: sc}
	}
	return cc
}

// countedConn decrements the open-socket count once, when go-redis closes it.
type countedConn struct {
	net.Conn
	counters dialCounters
	once     sync.Once
}

// NetConn returns the wrapped connection, as crypto/tls.Conn does.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

func (c *countedConn) Close() error {
	c.once.Do(func() { c.counters.add(func(d *dialCounter) { d.open.Add(-1) }) })
	return c.Conn.Close()
}

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
