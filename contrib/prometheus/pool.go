package prometheus

import (
	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/bounded-go/bounded/pool"
)

// PoolCollector exports a pool's lanes and health from pool.Pool.Stats and
// pool.Pool.Health, which read no Redis.
type PoolCollector struct {
	p *pool.Pool

	size, inUse, open, idle, waiting metric
	waits, timeouts, rejections      metric
	waitTime, dials, dialErrors      metric
	reserved, up, failures, probes   metric
	since                            metric
}

// NewPoolCollector returns a collector for p.
func NewPoolCollector(p *pool.Pool) *PoolCollector {
	return &PoolCollector{
		p:          p,
		size:       gauge("bounded_pool_max_connections", "Connections the lane may open and use.", "lane"),
		inUse:      gauge("bounded_pool_in_use_connections", "Commands holding a connection of the lane now.", "lane"),
		open:       gauge("bounded_pool_open_connections", "Sockets of the lane open now.", "lane"),
		idle:       gauge("bounded_pool_idle_connections", "Open sockets of the lane idle now.", "lane"),
		waiting:    gauge("bounded_pool_waiting_callers", "Callers waiting for a connection of the lane now.", "lane"),
		waits:      counter("bounded_pool_waits_total", "Acquisitions that had to wait for a connection.", "lane"),
		timeouts:   counter("bounded_pool_wait_timeouts_total", "Waits that ended without a connection.", "lane"),
		rejections: counter("bounded_pool_rejections_total", "Callers refused at once because too many were waiting.", "lane"),
		waitTime:   histogram("bounded_pool_wait_seconds", "Time each acquisition of a connection of the lane waited, zero waits included.", "lane"),
		dials:      counter("bounded_pool_dials_total", "Connections dialled by the lane.", "lane"),
		dialErrors: counter("bounded_pool_dial_errors_total", "Dials of the lane that failed.", "lane"),
		reserved:   gauge("bounded_pool_reserved_connections", "Connections of the blocking lane held by reservations."),
		up:         gauge("bounded_pool_up", "1 while the pool believes Redis is up, 0 while it is marked down."),
		failures:   counter("bounded_pool_health_failures_total", "Connection-level failures seen by the pool."),
		probes:     counter("bounded_pool_health_probes_total", "Calls let through to probe Redis while it was marked down."),
		since:      gauge("bounded_pool_health_changed_timestamp_seconds", "When the pool last marked Redis up or down (Unix time); absent while up since the start."),
	}
}

func (c *PoolCollector) metrics() []metric {
	return []metric{c.size, c.inUse, c.open, c.idle, c.waiting, c.waits, c.timeouts, c.rejections,
		c.waitTime, c.dials, c.dialErrors, c.reserved, c.up, c.failures, c.probes, c.since}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prom.Desc) { describe(ch, c.metrics()...) }

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prom.Metric) {
	s := c.p.Stats()
	for _, l := range []pool.LaneStats{s.Request, s.Background, s.Blocking.LaneStats} {
		c.size.emit(ch, float64(l.Size), l.Lane)
		c.inUse.emit(ch, float64(l.InUse), l.Lane)
		c.open.emit(ch, float64(l.Open), l.Lane)
		c.idle.emit(ch, float64(l.Idle), l.Lane)
		c.waiting.emit(ch, float64(l.Waiting), l.Lane)
		c.waits.emit(ch, float64(l.Waits), l.Lane)
		c.timeouts.emit(ch, float64(l.Timeouts), l.Lane)
		c.rejections.emit(ch, float64(l.Rejections), l.Lane)
		c.waitTime.emitHistogram(ch, l.WaitTime, l.Lane)
		c.dials.emit(ch, float64(l.Dials), l.Lane)
		c.dialErrors.emit(ch, float64(l.DialErrors), l.Lane)
	}
	c.reserved.emit(ch, float64(s.Blocking.Reserved))
	h := c.p.Health()
	c.up.emit(ch, boolFloat(h.Up))
	c.failures.emit(ch, float64(h.Failures))
	c.probes.emit(ch, float64(h.Probes))
	if !h.Since.IsZero() {
		c.since.emit(ch, float64(h.Since.UnixNano())/1e9)
	}
}
