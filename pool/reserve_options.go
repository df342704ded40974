package pool

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ReserveOptions configures the connections of a reservation made with
// ReserveBlockingWith. The zero value is ReserveBlocking's.
type ReserveOptions struct {
	// Protocol is the RESP version the reservation's connections speak: 3
	// (the default, as every lane) or 2. A cache that tracks raw writes
	// subscribes on RESP2 so that Redis sends its client-side-caching
	// invalidations as Pub/Sub messages on the subscription, and sends
	// nothing to a connection that is not subscribed.
	Protocol int
	// OnConnect runs on every new connection of the reservation's client
	// (a subscription's included, before it subscribes, and again after
	// each reconnect), once go-redis has set it up, as go-redis's
	// Options.OnConnect. Only connection set-up passes the reservation's
	// hooks there without taking its gate: HELLO (without arguments, or
	// with the reservation's own), CLIENT TRACKING, CLIENT SETNAME and
	// CLIENT SETINFO. An error closes the connection and fails the call
	// that needed it.
	OnConnect func(ctx context.Context, cn *redis.Conn) error
}

// apply sets o's fields on a reservation's go-redis options.
func (o ReserveOptions) apply(opts *redis.UniversalOptions) error {
	switch o.Protocol {
	case 0:
	case 2, 3:
		opts.Protocol = o.Protocol
	default:
		return fmt.Errorf("ReserveOptions.Protocol must be 2 or 3, got %d", o.Protocol)
	}
	opts.OnConnect = o.OnConnect
	return nil
}
