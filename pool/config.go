package pool

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/check"
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

	// Hooks are added, in order, to the go-redis client of every lane and
	// reservation (on a Redis Cluster, their DialHook to every node's
	// client too), so redisotel or a caller's own instrumentation sees
	// every command and pipeline. They run outside the lane's own hook:
	// they see refused calls with their error and time the wait for a
	// slot, and whatever they do, the gate and the refusals still apply.
	Hooks []redis.Hook
	// Instrument, when set, is called with every lane's and reservation's
	// client as it is made, after Hooks are added and before the lane's own
	// hook, for instrumentation that wants a client rather than a hook
	// (redisotel.InstrumentTracing, InstrumentMetrics). An error fails New
	// or ReserveBlocking. On a Redis Cluster client redisotel hooks the
	// node clients, which run inside the lane: refused calls are not seen.
	Instrument func(redis.UniversalClient) error

	// Logger receives health transitions. Nil discards.
	Logger *slog.Logger
	// Now is the clock of the health state. Nil means time.Now.
	Now func() time.Time
}

// withDefaults returns c with the URL's options taken in and the defaults
// documented on each field filled, or every problem found, each wrapping
// ErrInvalidConfig and naming the field.
func (c Config) withDefaults() (Config, error) {
	e := check.New(ErrInvalidConfig)
	if c.URL != "" && len(c.Addrs) > 0 {
		e.Addf("Config.URL and Config.Addrs are mutually exclusive")
	}
	e.Add(c.applyURL())
	c.checkServers(e)
	if c.ClientName == "" {
		c.ClientName = DefaultClientName
	}
	check.Default(e, &c.DialTimeout, DefaultDialTimeout, "Config.DialTimeout")
	check.Default(e, &c.ReadTimeout, DefaultReadTimeout, "Config.ReadTimeout")
	check.Default(e, &c.WriteTimeout, c.ReadTimeout, "Config.WriteTimeout")
	c.Request = c.Request.withDefaults(e, "Config.Request", LaneConfig{Size: DefaultRequestSize, MaxWait: DefaultRequestMaxWait})
	c.Background = c.Background.withDefaults(e, "Config.Background", LaneConfig{Size: DefaultBackgroundSize, MaxWait: DefaultBackgroundMaxWait})
	c.Blocking = c.Blocking.withDefaults(e)
	check.Default(e, &c.FailureThreshold, DefaultFailures, "Config.FailureThreshold")
	check.Default(e, &c.ProbeInterval, DefaultProbeInterval, "Config.ProbeInterval")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, e.Err()
}

// checkServers checks the addresses and the database, and fills the
// default address.
func (c *Config) checkServers(e *check.Errors) {
	for i, a := range c.Addrs {
		if a == "" {
			e.Addf("Config.Addrs[%d] is empty", i)
		}
	}
	if len(c.Addrs) == 0 {
		c.Addrs = []string{"127.0.0.1:6379"}
	}
	if c.DB < 0 {
		e.Addf("Config.DB must not be negative, got %d", c.DB)
	} else if c.DB != 0 && c.isCluster() {
		e.Addf("Config.DB is %d but Redis Cluster has only database 0", c.DB)
	}
}

// isCluster reports whether c selects Redis Cluster: ClusterMode, or
// several addresses that are not sentinels.
func (c Config) isCluster() bool {
	return c.ClusterMode || (len(c.Addrs) > 1 && c.MasterName == "")
}

// withDefaults fills the zero fields of a shared lane's config from def
// (MaxWaiters from the size) and records what is wrong under field.
func (l LaneConfig) withDefaults(e *check.Errors, field string, def LaneConfig) LaneConfig {
	switch {
	case l.Size == 0:
		l.Size = def.Size
	case l.Size < 0:
		e.Addf("%s.Size must be at least 1, got %d", field, l.Size)
	}
	check.Default(e, &l.MaxWait, def.MaxWait, field+".MaxWait")
	check.Default(e, &l.MaxWaiters, DefaultWaitersPerConn*l.Size, field+".MaxWaiters")
	return l
}

// withDefaults fills the blocking lane's size unless NoBlocking is set.
func (b BlockingConfig) withDefaults(e *check.Errors) BlockingConfig {
	if b.NoBlocking {
		if b.Size != 0 {
			e.Addf("Config.Blocking.NoBlocking is set but Config.Blocking.Size is %d", b.Size)
		}
		return b
	}
	check.Default(e, &b.Size, DefaultBlockingSize, "Config.Blocking.Size")
	return b
}

// applyURL takes what URL sets into the fields the caller left zero (fields
// set in Config win) and refuses what the pool cannot honour.
func (c *Config) applyURL() error {
	if c.URL == "" {
		return nil
	}
	u, err := redis.ParseURL(c.URL)
	if err != nil {
		return urlError(c.URL, err) // redact.go: the URL may hold a password
	}
	if u.Network == "unix" {
		return errors.New("Config.URL: unix sockets are not supported; use a TCP address")
	}
	if name := poolOption(u); name != "" {
		return fmt.Errorf("Config.URL sets %s, which the pool decides per lane (Config.Request, Background, Blocking); remove it", name)
	}
	if len(c.Addrs) == 0 {
		c.Addrs = []string{u.Addr}
	}
	fill(&c.Username, u.Username)
	fill(&c.Password, u.Password)
	fill(&c.DB, u.DB)
	if c.TLSConfig == nil {
		c.TLSConfig = u.TLSConfig
	}
	fill(&c.DialTimeout, u.DialTimeout)
	fill(&c.ReadTimeout, u.ReadTimeout)
	fill(&c.WriteTimeout, u.WriteTimeout)
	fill(&c.ClientName, u.ClientName)
	return nil
}

// poolOption returns the name of the first pool-sizing option the parsed
// URL sets, or "".
func poolOption(u *redis.Options) string {
	for _, o := range []struct {
		name string
		set  bool
	}{
		{"pool_size", u.PoolSize != 0}, {"min_idle_conns", u.MinIdleConns != 0}, {"max_idle_conns", u.MaxIdleConns != 0},
		{"max_active_conns", u.MaxActiveConns != 0}, {"pool_timeout", u.PoolTimeout != 0}, {"max_retries", u.MaxRetries != 0},
		{"pool_fifo", u.PoolFIFO},
	} {
		if o.set {
			return o.name
		}
	}
	return ""
}

// fill sets *field to v when it is the zero value.
func fill[T comparable](field *T, v T) {
	var zero T
	if *field == zero {
		*field = v
	}
}
