package pool

import (
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// universalOptions turns the connection part of a config filled by
// withDefaults into go-redis options. Pool sizes are set per lane by
// laneOptions.
func (c *Config) universalOptions() *redis.UniversalOptions {
	o := &redis.UniversalOptions{
		Addrs:            c.Addrs,
		IsClusterMode:    c.ClusterMode,
		MasterName:       c.MasterName,
		Username:         c.Username,
		Password:         c.Password,
		SentinelUsername: c.SentinelUsername,
		SentinelPassword: c.SentinelPassword,
		DB:               c.DB,
		TLSConfig:        c.TLSConfig,
	}
	o.DialTimeout = c.DialTimeout
	o.ReadTimeout = c.ReadTimeout
	o.WriteTimeout = c.WriteTimeout
	// The caller's context bounds every call (socket deadlines follow it).
	o.ContextTimeoutEnabled = true
	// A command runs at most once per call: go-redis's retries would repeat
	// non-idempotent scripts (enqueue, ack) behind the caller after a lost
	// reply, and would retry pool timeouts for seconds. Components retry
	// where it is safe.
	o.MaxRetries = -1
	// Redis Cluster's client has a retry loop of its own, bounded by
	// MaxRedirects rather than MaxRetries: it re-sends a command (or a
	// whole pipeline) up to 3 more times after EOF, a timeout, LOADING,
	// TRYAGAIN or CLUSTERDOWN, so a script could run 4 times for one call.
	// -1 turns the loop off. The price: a MOVED or ASK reply (the slot moved
	// in a failover or a resharding) is returned to the caller instead of
	// being followed; go-redis reloads the slot map when it sees one, so
	// the next call goes to the new owner. Components retry where it is
	// safe.
	o.MaxRedirects = -1
	// One dial attempt per call; go-redis's default is 5 attempts 100ms apart,
	// which turns "Redis refuses connections" into half a second per call.
	o.DialerRetries = 1
	// Pipelines use the lane's own connections instead of a hidden extra
	// pool of 10 per client, so they are counted in the lane.
	o.PipelinePoolSize = -1
	// No pre-dialled idle connections (go-redis dials those in goroutines of
	// its own); connections open on demand and stay within the lane size.
	o.MinIdleConns = 0
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return o
}

// dialBreakerThreshold is the number of failed dials in a row after which
// go-redis stops dialling a lane (see laneOptions).
const dialBreakerThreshold = 1000

// laneOptions copies base and sizes it for one lane of size connections.
func laneOptions(base *redis.UniversalOptions, clientName string, size int, poolTimeout time.Duration) *redis.UniversalOptions {
	o := *base
	o.ClientName = clientName
	// MaxActiveConns is the real socket limit. PoolSize only has to be at
	// least that; go-redis also uses it as the threshold of its own dial
	// circuit breaker (after PoolSize failed dials it refuses to dial and
	// retries once a second in a goroutine of its own), which would make a
	// lane of one connection stay dead for a second after any outage. The
	// pool's own health state does that job, so the threshold is set high.
	o.PoolSize = max(size, dialBreakerThreshold)
	o.MaxActiveConns = size
	o.MaxIdleConns = size
	o.MaxConcurrentDials = size
	// The gate admits at most size callers, so go-redis never waits for a
	// connection; this only bounds a dial that outlives its caller.
	o.PoolTimeout = poolTimeout
	return &o
}
