package pool

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Health is a snapshot of what the pool believes about Redis.
type Health struct {
	Up        bool
	Since     time.Time // when the current state began (zero: up since the start)
	LastError error     // the failure that marked Redis down (redis.IsAuthError: credentials refused); nil while up
	Failures  uint64    // connection-level failures seen since the start
	Probes    uint64    // calls let through to probe Redis while it was down
}

// health is a circuit breaker fed by the outcome of every command, so it
// needs no background poller: traffic is the probe. It marks Redis down after
// threshold consecutive connection-level failures (refused or reset
// connections, I/O timeouts, LOADING, MASTERDOWN, CLUSTERDOWN), or after one
// NOAUTH or WRONGPASS, and up again after one success. While it is down, one
// command per probe interval is let through; the rest fail at once with
// ErrUnavailable.
type health struct {
	threshold int64
	interval  time.Duration
	now       func() time.Time
	log       *slog.Logger

	down        atomic.Bool
	consecutive atomic.Int64
	nextProbe   atomic.Int64 // unix nanos
	failures    atomic.Uint64
	probes      atomic.Uint64

	downErr atomic.Pointer[error] // what admit returns while down, built once
	// auth is set while Redis refuses the pool's credentials (NOAUTH,
	// WRONGPASS): a configuration error, so every lane fails fast, not
	// only the request lane, until a probe succeeds.
	auth atomic.Bool

	mu      sync.Mutex // guards since and lastErr
	since   time.Time
	lastErr error
}

// admit is Pool.Admit: nil while up or while a probe is due. It claims
// nothing: the probe is claimed by the command itself (admitCommand), so
// there is no ticket another caller could spend.
func (h *health) admit() error {
	if !h.down.Load() || h.now().UnixNano() >= h.nextProbe.Load() {
		return nil
	}
	return h.unavailable()
}

// probeTicket is a probe granted by Pool.AdmitContext, carried in the
// context of the caller it was granted to and spent by its first command.
type probeTicket struct {
	h       *health
	unspent atomic.Bool
}

type probeTicketKey struct{}

// admitContext is Pool.AdmitContext.
func (h *health) admitContext(ctx context.Context) (context.Context, error) {
	if !h.down.Load() {
		return ctx, nil
	}
	if !h.claimProbe() {
		return ctx, h.unavailable()
	}
	t := &probeTicket{h: h}
	t.unspent.Store(true)
	return context.WithValue(ctx, probeTicketKey{}, t), nil
}

// admitLane is the check of a lane that does not fail fast while Redis is
// down (background, reservations): it does while Redis refuses the
// credentials, which waiting will not mend.
func (h *health) admitLane(ctx context.Context) error {
	if !h.auth.Load() {
		return nil
	}
	return h.admitCommand(ctx)
}

// admitCommand is the request lane's check: a command passes while Redis is
// up, with the probe ticket AdmitContext put in its context, or as the
// probe itself.
func (h *health) admitCommand(ctx context.Context) error {
	if !h.down.Load() {
		return nil
	}
	if t, ok := ctx.Value(probeTicketKey{}).(*probeTicket); ok && t.h == h && t.unspent.CompareAndSwap(true, false) {
		return nil
	}
	if h.claimProbe() {
		return nil
	}
	return h.unavailable()
}

func (h *health) claimProbe() bool {
	now := h.now().UnixNano()
	next := h.nextProbe.Load()
	if now >= next && h.nextProbe.CompareAndSwap(next, now+int64(h.interval)) {
		h.probes.Add(1)
		return true
	}
	return false
}

func (h *health) unavailable() error {
	if e := h.downErr.Load(); e != nil {
		return *e
	}
	return ErrUnavailable
}

// observe classifies a command's outcome, updates the state and returns
// the outcome.
func (h *health) observe(ctx context.Context, err error) outcome {
	o := classify(ctx, err)
	switch o {
	case outcomeUp:
		h.consecutive.Store(0)
		if h.down.Load() && h.down.CompareAndSwap(true, false) {
			h.markUp()
		}
	case outcomeAuth:
		h.failures.Add(1)
		h.consecutive.Add(1)
		if !h.auth.Load() {
			h.markAuthDown(err)
		}
	case outcomeDown:
		h.failures.Add(1)
		if h.consecutive.Add(1) >= h.threshold && !h.down.Load() && h.down.CompareAndSwap(false, true) {
			h.markDown(err)
		}
	}
	return o
}

// markUp records the end of an outage; the caller has just cleared down.
func (h *health) markUp() {
	h.auth.Store(false)
	h.mu.Lock()
	downFor := h.now().Sub(h.since)
	h.since, h.lastErr = h.now(), nil
	h.mu.Unlock()
	h.log.Info("pool: redis reachable again", "down_for", downFor)
}

// markDown records the start of an outage caused by err; the caller has
// just set down.
func (h *health) markDown(err error) {
	now := h.now()
	h.nextProbe.Store(now.Add(h.interval).UnixNano())
	h.mu.Lock()
	h.since, h.lastErr = now, err
	h.mu.Unlock()
	// Built once per outage so failing fast allocates nothing.
	downErr := fmt.Errorf("%w since %s (one call per %s probes it): %w",
		ErrUnavailable, now.Format(time.RFC3339Nano), h.interval, err)
	h.downErr.Store(&downErr)
	h.log.Warn("pool: redis marked unavailable; calls fail fast until a probe succeeds",
		"err", err, "probe_interval", h.interval)
}

// markAuthDown marks Redis down at the first NOAUTH or WRONGPASS, whatever
// the threshold: the next call would re-dial and be refused again.
func (h *health) markAuthDown(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.auth.Load() {
		return
	}
	now := h.now()
	if !h.down.Load() {
		h.since = now
		h.nextProbe.Store(now.Add(h.interval).UnixNano())
	}
	h.lastErr = err
	downErr := fmt.Errorf("%w since %s: redis refused the credentials (Config.Username and Config.Password, or the URL's); every lane fails fast, one call per %s probes it: %w",
		ErrUnavailable, h.since.Format(time.RFC3339Nano), h.interval, err)
	h.downErr.Store(&downErr)
	h.auth.Store(true)
	h.down.Store(true)
	h.log.Error("pool: redis refused the credentials; every call fails fast until a probe succeeds",
		"err", err, "probe_interval", h.interval)
}

func (h *health) snapshot() Health {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Health{
		Up:        !h.down.Load(),
		Since:     h.since,
		LastError: h.lastErr,
		Failures:  h.failures.Load(),
		Probes:    h.probes.Load(),
	}
}
