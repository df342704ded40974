package pool

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// LaneStats describes one lane. Counters count since the pool was built.
type LaneStats struct {
	Lane       string        `json:"lane"`
	Size       int           `json:"size"`        // connections the lane may open and use
	InUse      int           `json:"in_use"`      // commands holding a connection now
	Open       int           `json:"open"`        // sockets open now (never above Size unless Subscribe is used on Client or Background; on Redis Cluster, per node)
	Idle       int           `json:"idle"`        // open sockets waiting in go-redis's pool
	Waiting    int           `json:"waiting"`     // callers waiting for a connection now
	Waits      uint64        `json:"waits"`       // acquisitions that had to wait
	Timeouts   uint64        `json:"timeouts"`    // waits that ended without a connection
	Rejections uint64        `json:"rejections"`  // callers refused at once (too many waiting)
	WaitP50    time.Duration `json:"wait_p50_ns"` // over all acquisitions, waits of zero included
	WaitP99    time.Duration `json:"wait_p99_ns"`
	// WaitTime counts every acquisition's wait (zero waits included, as
	// WaitP50 and WaitP99 do) in fixed buckets, with their sum: what a
	// Prometheus histogram exports.
	WaitTime   Histogram `json:"wait_time"`
	Dials      uint64    `json:"dials"`
	DialErrors uint64    `json:"dial_errors"`
	// SentinelOpen (Redis Sentinel only) is the sockets to sentinels open
	// now, apart from Open: per client (the lane's, or each reservation's)
	// one subscription to +switch-master and the sockets that ask a
	// sentinel for the master's address at each dial (one while dials do
	// not overlap, at most Size).
	SentinelOpen int `json:"sentinel_open"`
}

// ReservationStats describes one reservation of the blocking lane.
type ReservationStats struct {
	Owner string `json:"owner"`
	Size  int    `json:"size"`
	InUse int    `json:"in_use"`
	Open  int    `json:"open"`
	// SentinelOpen is the reservation's sockets to sentinels (Redis
	// Sentinel only; see LaneStats.SentinelOpen).
	SentinelOpen int `json:"sentinel_open"`
}

// BlockingStats describes the blocking lane and who holds it.
type BlockingStats struct {
	LaneStats
	Reserved     int                `json:"reserved"` // connections held by reservations
	Reservations []ReservationStats `json:"reservations"`
}

// Stats is a snapshot of the pool.
type Stats struct {
	Request    LaneStats     `json:"request"`
	Background LaneStats     `json:"background"`
	Blocking   BlockingStats `json:"blocking"`
	Healthy    bool          `json:"healthy"`
	// TotalSize is the most sockets the pool can open on one Redis server:
	// the sum of the lanes. On Redis Cluster it applies to each node.
	TotalSize int `json:"total_size"`
	// Open is the sockets open now, over all lanes and nodes.
	Open int `json:"open"`
	// SentinelOpen is the sockets to sentinels open now, over all lanes
	// and reservations (Redis Sentinel only; see LaneStats.SentinelOpen).
	SentinelOpen int `json:"sentinel_open"`
}

func counterStats(s *LaneStats, st *laneCounters, d *dialCounter) {
	s.Waiting = int(st.waiting.Load())
	s.Waits = st.waits.Load()
	s.Timeouts = st.timeouts.Load()
	s.Rejections = st.rejections.Load()
	s.WaitP50 = st.waitTime.Quantile(0.50)
	s.WaitP99 = st.waitTime.Quantile(0.99)
	s.WaitTime = snapshot(&st.waitBkts)
	s.Dials = d.dials.Load()
	s.DialErrors = d.dialErrors.Load()
	s.Open = int(d.open.Load())
	s.SentinelOpen = int(d.sentinelOpen.Load())
}

func idle(c redis.UniversalClient) int {
	if ps := c.PoolStats(); ps != nil {
		return int(ps.IdleConns)
	}
	return 0
}

func (l *lane) stats() LaneStats {
	s := LaneStats{Lane: l.name, Size: l.gate.size, InUse: l.gate.inUse(), Idle: idle(l.client)}
	counterStats(&s, &l.counts, &l.dials)
	return s
}

// Stats returns a snapshot of every lane and of the health state. It takes
// no lock on the command path and is cheap enough for a metrics scrape.
func (p *Pool) Stats() Stats {
	s := Stats{
		Request:    p.request.stats(),
		Background: p.background.stats(),
		Healthy:    p.Healthy(),
	}
	b := &s.Blocking
	b.Lane = LaneBlocking
	counterStats(&b.LaneStats, &p.blockStats, &p.blockDials)
	p.mu.Lock()
	b.Size = p.blockingSize
	for _, r := range p.reservations {
		rs := ReservationStats{Owner: r.owner, Size: r.n, InUse: r.gate.inUse(), Open: int(r.dials.open.Load()),
			SentinelOpen: int(r.dials.sentinelOpen.Load())}
		b.Reserved += r.n
		b.InUse += rs.InUse
		b.Idle += idle(r.client)
		b.Reservations = append(b.Reservations, rs)
	}
	p.mu.Unlock()
	s.TotalSize = s.Request.Size + s.Background.Size + b.Size
	s.Open = s.Request.Open + s.Background.Open + b.Open
	s.SentinelOpen = s.Request.SentinelOpen + s.Background.SentinelOpen + b.SentinelOpen
	return s
}
