package pool

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bounded-go/bounded/internal/hist"
)

// gate admits at most size callers at a time onto a lane's connections.
// Every command and pipeline sent through a lane's client passes the gate
// before go-redis takes a connection, and go-redis's own pool is sized to the
// gate, so go-redis never waits for (or retries behind the caller on) a
// connection: the waiting happens here, where it is bounded and counted
// (but for the rare full go-redis pool that laneHook.waitForConn handles).
type gate struct {
	lane       string
	owner      string // reservation owner, empty for shared lanes
	size       int
	maxWait    time.Duration // 0: only the caller's ctx bounds the wait
	maxWaiters int

	// sem holds one token per connection in use. A buffered channel queues
	// blocked senders in FIFO order, which is the fairness we want.
	sem chan struct{}
	// st is shared by all gates of a lane (the blocking lane has one gate per
	// reservation), so lane statistics add up without merging.
	st *laneCounters
}

type laneCounters struct {
	waiting    atomic.Int64
	waits      atomic.Uint64  // acquisitions that had to wait
	timeouts   atomic.Uint64  // waits that ended without a connection
	rejections atomic.Uint64  // refused at once: too many waiters
	waitTime   hist.Histogram // quantiles (LaneStats.WaitP50, WaitP99)
	waitBkts   hist.Buckets   // the exported histogram (LaneStats.WaitTime)
}

// observeWait records one acquisition's wait in both histograms.
func (st *laneCounters) observeWait(d time.Duration) {
	st.waitTime.Observe(d)
	st.waitBkts.Observe(d)
}

// newGate makes the gate of a lane, or of a reservation of the blocking
// lane (owner), sized by lc (filled: MaxWaiters is not defaulted here).
func newGate(lane, owner string, lc LaneConfig, st *laneCounters) *gate {
	return &gate{
		lane:       lane,
		owner:      owner,
		size:       lc.Size,
		maxWait:    lc.MaxWait,
		maxWaiters: lc.MaxWaiters,
		sem:        make(chan struct{}, lc.Size),
		st:         st,
	}
}

// acquire takes one connection slot or fails within ctx and maxWait.
func (g *gate) acquire(ctx context.Context) error {
	select {
	case g.sem <- struct{}{}:
		g.st.observeWait(0)
		return nil
	default:
	}
	if err := ctx.Err(); err != nil {
		return g.fail(err, "the caller's context ended before a connection was free", 0)
	}
	if n := g.st.waiting.Add(1); int(n) > g.maxWaiters {
		g.st.waiting.Add(-1)
		g.st.rejections.Add(1)
		return g.errorf(nil, fmt.Sprintf("%d callers already waiting (max %d)", n-1, g.maxWaiters), 0)
	}
	defer g.st.waiting.Add(-1)
	g.st.waits.Add(1)
	start := time.Now()

	var expire <-chan time.Time
	if g.maxWait > 0 {
		t := time.NewTimer(g.maxWait)
		defer t.Stop()
		expire = t.C
	}
	select {
	case g.sem <- struct{}{}:
		g.st.observeWait(time.Since(start))
		return nil
	case <-expire:
		waited := time.Since(start)
		g.st.observeWait(waited)
		g.st.timeouts.Add(1)
		return g.errorf(context.DeadlineExceeded, fmt.Sprintf("no connection free within the lane's max wait %s", g.maxWait), waited)
	case <-ctx.Done():
		waited := time.Since(start)
		g.st.observeWait(waited)
		return g.fail(ctx.Err(), "the caller's context ended while waiting for a connection", waited)
	}
}

func (g *gate) fail(err error, why string, waited time.Duration) error {
	g.st.timeouts.Add(1)
	return g.errorf(err, why, waited)
}

func (g *gate) errorf(cause error, why string, waited time.Duration) error {
	return &LaneError{
		Lane:    g.lane,
		Owner:   g.owner,
		Size:    g.size,
		InUse:   len(g.sem),
		Waiting: int(g.st.waiting.Load()),
		Waited:  waited,
		Reason:  why,
		Err:     cause,
	}
}

func (g *gate) release() { <-g.sem }

func (g *gate) inUse() int { return len(g.sem) }
