package pool

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Defaults filled in by New for zero fields of Config.
const (
	DefaultRequestSize       = 20
	DefaultRequestMaxWait    = 250 * time.Millisecond
	DefaultBackgroundSize    = 4
	DefaultBackgroundMaxWait = 2 * time.Second
	DefaultBlockingSize      = 4
	// DefaultWaitersPerConn sets a lane's MaxWaiters to this many times its
	// size when MaxWaiters is zero.
	DefaultWaitersPerConn = 4
	DefaultDialTimeout    = 2 * time.Second
	DefaultReadTimeout    = 3 * time.Second
	DefaultProbeInterval  = 250 * time.Millisecond
	DefaultFailures       = 3
	DefaultClientName     = "bounded"
)

// LaneConfig sizes a shared lane. The zero value takes the lane's defaults.
type LaneConfig struct {
	// Size is the most connections the lane opens and uses at once.
	Size int
	// MaxWait bounds how long a caller waits for a free connection, on top of
	// the caller's own context: whichever ends first wins.
	MaxWait time.Duration
	// MaxWaiters caps the callers waiting at once; the next one is refused at
	// once with ErrLaneExhausted, so a pile-up (the post-mortem's 282 callers
	// behind a pool of 20) cannot form. Zero means DefaultWaitersPerConn*Size.
	MaxWaiters int
}

// BlockingConfig sizes the blocking lane, which is handed out only in
// reservations (ReserveBlocking) made when components are built.
type BlockingConfig struct {
	// Size is the most connections all reservations together may hold.
	// Zero means DefaultBlockingSize. Set NoBlocking for a pool without one.
	Size int
	// NoBlocking makes a pool with no blocking lane: every reservation fails.
	NoBlocking bool
}

// Config configures a Pool. The zero value connects to 127.0.0.1:6379 with
// the default lane sizes; New fills in the defaults documented on each field
// and validates the rest, naming the field that is wrong.
type Config struct {
	// URL is a redis:// or rediss:// URL: user, password, host, port, db,
	// and the query options dial_timeout, read_timeout, write_timeout and
	// client_name (fields set in Config win). Pool-sizing options
	// (pool_size, max_retries, ...) are refused: the lanes set those.
	// Mutually exclusive with Addrs.
	URL string
	// Addrs lists host:port addresses: one server, cluster seed nodes, or
	// Sentinel nodes when MasterName is set. Several addresses without
	// MasterName mean Redis Cluster.
	Addrs []string
	// ClusterMode forces Redis Cluster with a single seed address or URL.
	ClusterMode bool
	// MasterName selects Redis Sentinel: Addrs are the sentinels.
	MasterName string

	Username         string
	Password         string
	SentinelUsername string
	SentinelPassword string
	// DB is the database number (single server and Sentinel only).
	DB int
	// TLSConfig enables TLS when set (rediss:// URLs set it too).
	TLSConfig *tls.Config
	// ClientName prefixes the CLIENT SETNAME of every connection, followed by
	// the lane ("bounded-request", "bounded-blocking-queue:chat"), so CLIENT
	// LIST shows who holds what. Default "bounded".
	ClientName string

	// DialTimeout bounds one connection attempt. Default 2s. Dial attempts
	// are not retried behind the caller.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound one socket read or write (blocking
	// commands add their own timeout). Default 3s. The caller's context
	// deadline applies too.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration

	// Request is the lane of Client(): short commands on the request path.
	// Default size 20, max wait 250ms, 80 waiters.
	Request LaneConfig
	// Background is the lane of Background(): the bookkeeping components do
	// off the request path (acks, scheduling, heartbeats, sweeps), so it can
	// neither starve requests nor be starved by them. Default size 4, max
	// wait 2s, 16 waiters.
	Background LaneConfig
	// Blocking is the lane of blocking commands and subscriptions.
	Blocking BlockingConfig

	// FailureThreshold is how many connection failures in a row mark Redis
	// down (see Admit). Default 3.
	FailureThreshold int
	// ProbeInterval is how often, while Redis is down, one call is let
	// through to find out whether it is back. Default 250ms.
	ProbeInterval time.Duration

	// Logger receives health transitions. Nil discards.
	Logger *slog.Logger
	// Now is the clock of the health state. Nil means time.Now.
	Now func() time.Time
}

// applyURLOptions takes the timeouts and client name a URL sets into the
// fields the caller left zero, and refuses what the pool cannot honour.
// The address, credentials, DB and TLS are read in universalOptions.
func (c *Config) applyURLOptions() error {
	if c.URL == "" {
		return nil
	}
	u, err := redis.ParseURL(c.URL)
	if err != nil {
		return fmt.Errorf("pool: Config.URL: %w", err)
	}
	if u.Network == "unix" {
		return errors.New("pool: Config.URL: unix sockets are not supported; use a TCP address")
	}
	for _, o := range []struct {
		name string
		set  bool
	}{
		{"pool_size", u.PoolSize != 0}, {"min_idle_conns", u.MinIdleConns != 0}, {"max_idle_conns", u.MaxIdleConns != 0},
		{"max_active_conns", u.MaxActiveConns != 0}, {"pool_timeout", u.PoolTimeout != 0}, {"max_retries", u.MaxRetries != 0},
		{"pool_fifo", u.PoolFIFO},
	} {
		if o.set {
			return fmt.Errorf("pool: Config.URL sets %s, which the pool decides per lane (Config.Request, Background, Blocking); remove it", o.name)
		}
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = u.DialTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = u.ReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = u.WriteTimeout
	}
	if c.ClientName == "" {
		c.ClientName = u.ClientName
	}
	return nil
}

func (c *Config) fillDefaults() {
	if c.ClientName == "" {
		c.ClientName = DefaultClientName
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = c.ReadTimeout
	}
	fillLane(&c.Request, DefaultRequestSize, DefaultRequestMaxWait)
	fillLane(&c.Background, DefaultBackgroundSize, DefaultBackgroundMaxWait)
	if c.Blocking.Size == 0 && !c.Blocking.NoBlocking {
		c.Blocking.Size = DefaultBlockingSize
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = DefaultFailures
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func fillLane(l *LaneConfig, size int, wait time.Duration) {
	if l.Size == 0 {
		l.Size = size
	}
	if l.MaxWait == 0 {
		l.MaxWait = wait
	}
	if l.MaxWaiters == 0 {
		l.MaxWaiters = DefaultWaitersPerConn * l.Size
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("pool: "+format, args...)) }
	if c.URL != "" && len(c.Addrs) > 0 {
		bad("Config.URL and Config.Addrs are mutually exclusive")
	}
	for i, a := range c.Addrs {
		if a == "" {
			bad("Config.Addrs[%d] is empty", i)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"DialTimeout", c.DialTimeout}, {"ReadTimeout", c.ReadTimeout}, {"WriteTimeout", c.WriteTimeout}, {"ProbeInterval", c.ProbeInterval}} {
		if d.v < 0 {
			bad("Config.%s must not be negative, got %s", d.name, d.v)
		}
	}
	for _, l := range []struct {
		name string
		cfg  LaneConfig
	}{{"Request", c.Request}, {"Background", c.Background}} {
		if l.cfg.Size < 1 {
			bad("Config.%s.Size must be at least 1, got %d", l.name, l.cfg.Size)
		}
		if l.cfg.MaxWait < 0 {
			bad("Config.%s.MaxWait must not be negative, got %s", l.name, l.cfg.MaxWait)
		}
		if l.cfg.MaxWaiters < 0 {
			bad("Config.%s.MaxWaiters must not be negative, got %d", l.name, l.cfg.MaxWaiters)
		}
	}
	if c.Blocking.Size < 0 {
		bad("Config.Blocking.Size must not be negative, got %d", c.Blocking.Size)
	}
	if c.Blocking.NoBlocking && c.Blocking.Size != 0 {
		bad("Config.Blocking.NoBlocking is set but Config.Blocking.Size is %d", c.Blocking.Size)
	}
	if c.FailureThreshold < 0 {
		bad("Config.FailureThreshold must not be negative, got %d", c.FailureThreshold)
	}
	if c.DB < 0 {
		bad("Config.DB must not be negative, got %d", c.DB)
	}
	return errors.Join(errs...)
}

// universalOptions turns the connection part of the config into go-redis
// options. Pool sizes are set per lane by laneOptions.
func (c *Config) universalOptions() (*redis.UniversalOptions, error) {
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
	if c.URL != "" {
		u, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("pool: Config.URL: %w", err)
		}
		o.Addrs = []string{u.Addr}
		if o.Username == "" {
			o.Username = u.Username
		}
		if o.Password == "" {
			o.Password = u.Password
		}
		if o.DB == 0 {
			o.DB = u.DB
		}
		if o.TLSConfig == nil {
			o.TLSConfig = u.TLSConfig
		}
	}
	if len(o.Addrs) == 0 {
		o.Addrs = []string{"127.0.0.1:6379"}
	}
	if o.DB != 0 && (o.IsClusterMode || (len(o.Addrs) > 1 && o.MasterName == "")) {
		return nil, fmt.Errorf("pool: Config.DB is %d but Redis Cluster has only database 0", o.DB)
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
	return o, nil
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
