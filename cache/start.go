package cache

import (
	"context"
	"fmt"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// Start registers the cache's background work with g: a closer that, when g
// closes, cancels the loads in progress and waits for them, and, unless
// Config.NoInvalidation is set, the invalidation subscriber. The subscriber
// holds one connection of the pool's blocking lane, reserved here: a pool
// whose blocking lane is used up fails Start with pool.ErrOverBudget.
//
// The subscriber connects in the background (Stats.Subscribed says when it
// is listening) and flushes the local tier every time it (re)subscribes,
// since messages sent while it was away are lost. Start may be called once;
// a second call fails with ErrAlreadyStarted (and also matches ErrClosed
// once g has closed). A Start that fails (g closing meanwhile, no room in the
// pool) leaves the cache unstarted and open, and may be tried again.
// Closing g closes the cache: see ErrClosed.
func (c *Cache[V]) Start(g *lifecycle.Group) error {
	if g == nil {
		return fmt.Errorf("%w: cache %q: Start: nil group", ErrInvalid, c.name)
	}
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if c.started {
		if c.loads.isClosed() {
			return fmt.Errorf("%w: cache %q: Start: %w", ErrAlreadyStarted, c.name, ErrClosed)
		}
		return fmt.Errorf("%w: cache %q", ErrAlreadyStarted, c.name)
	}
	var res *pool.Reservation
	if !c.cfg.NoInvalidation {
		var err error
		if res, err = c.p.ReserveBlockingWith("cache:"+c.name+" invalidation", 1, c.reserveOptions()); err != nil {
			return fmt.Errorf("cache %q: Start: %w", c.name, err)
		}
	}
	if err := c.register(g, res); err != nil {
		if res != nil {
			_ = res.Release()
		}
		return fmt.Errorf("cache %q: Start: %w", c.name, err)
	}
	c.started, c.group = true, g
	return nil
}

// startedOn reports whether Start succeeded on g.
func (c *Cache[V]) startedOn(g *lifecycle.Group) bool {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	return c.started && c.group == g
}

// register hands g the loads' closer and, with res (nil under
// Config.NoInvalidation), the subscriber and its reservation's release.
func (c *Cache[V]) register(g *lifecycle.Group, res *pool.Reservation) error {
	// The group may begin closing between two of these registrations: then
	// Start fails, and the closer registered before must not close the
	// cache, which was never started on g and stays usable. The closer
	// runs after Start returned (it takes startMu) and acts only if this
	// Start succeeded.
	if err := g.OnClose("cache:"+c.name+" loads", func(ctx context.Context) error {
		if !c.startedOn(g) {
			return nil
		}
		return c.loads.close(ctx)
	}); err != nil {
		return err
	}
	if err := c.startRefreshers(g); err != nil {
		return err
	}
	if res == nil {
		return nil
	}
	name := "cache:" + c.name + " invalidation"
	if err := g.OnClose(name, func(context.Context) error { return res.Release() }); err != nil {
		return err
	}
	return g.Go(name, func(ctx context.Context) error { return c.subscribe(ctx, res) })
}
