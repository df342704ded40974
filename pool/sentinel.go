package pool

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Redis Sentinel: each lane and reservation is a go-redis failover client,
// which keeps a client of its own to one sentinel (asking it for the
// master's address at every dial) and a subscription to +switch-master
// there. Those sockets are not the lane's: they are counted apart, in
// LaneStats.SentinelOpen.
//
// go-redis calls one Dialer for both the master's sockets and the
// sentinels'. sentinelDialer counts every socket it dials as a sentinel's;
// the lane's DialHook, which only the master's dials pass through, takes
// its own back out of that count (toLane).
func sentinelDialer(o *redis.UniversalOptions, counters dialCounters) func(context.Context, string, string) (net.Conn, error) {
	dial := redis.NewDialer(&redis.Options{DialTimeout: o.DialTimeout, TLSConfig: o.TLSConfig})
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		counters.add(func(d *dialCounter) { d.sentinelOpen.Add(1) })
		sc := &sentinelConn{Conn: c, counters: counters}
		if sys, ok := c.(syscall.Conn); ok {
			// go-redis peeks at idle sockets through syscall.Conn (see
			// countedSysConn).
			return &sentinelSysConn{sentinelConn: sc, sc: sys}, nil
		}
		return sc, nil
	}
}

// sentinelConn is a socket counted as a sentinel's until toLane or Close.
type sentinelConn struct {
	net.Conn
	counters  dialCounters
	uncounted atomic.Bool
}

type sentinelSysConn struct {
	*sentinelConn
	sc syscall.Conn
}

func (c *sentinelSysConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }

func (c *sentinelConn) uncount() {
	if c.uncounted.CompareAndSwap(false, true) {
		c.counters.add(func(d *dialCounter) { d.sentinelOpen.Add(-1) })
	}
}

func (c *sentinelConn) Close() error {
	c.uncount()
	return c.Conn.Close()
}

// toLane takes a socket to the master out of the sentinel count and
// returns the socket beneath, for the lane to count.
func toLane(c net.Conn) net.Conn {
	var sc *sentinelConn
	switch v := c.(type) {
	case *sentinelConn:
		sc = v
	case *sentinelSysConn:
		sc = v.sentinelConn
	default:
		return c
	}
	sc.uncount()
	return sc.Conn
}
