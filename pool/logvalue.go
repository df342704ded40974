package pool

import (
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// redacted stands for a secret in a logged Config.
const redacted = "REDACTED"

// LogValue implements slog.LogValuer, so that logging a whole Config
// (slog.Any("pool", cfg)) shows where it connects and how its lanes are
// sized, never a secret: Password and SentinelPassword are logged as
// REDACTED when set, the password of URL as xxxxx and the values of its
// query options that go-redis does not know (?password=) as REDACTED (a
// URL that does not parse is not shown), and an address of Addrs that
// holds user info or a query (a URL put there by mistake) loses them. Fields at their zero value are left
// out; Logger, Now, Hooks and Instrument are not logged (Hooks by count).
// fmt prints a Config the same way (String, GoString).
func (c Config) LogValue() slog.Value {
	var as []slog.Attr
	add := func(a slog.Attr) { as = append(as, a) }
	if c.URL != "" {
		add(slog.String("url", redactURL(c.URL)))
	}
	if len(c.Addrs) > 0 {
		addrs := make([]string, len(c.Addrs))
		for i, a := range c.Addrs {
			addrs[i] = redactAddr(a)
		}
		add(slog.Any("addrs", addrs))
	}
	if c.ClusterMode {
		add(slog.Bool("cluster_mode", true))
	}
	for _, s := range []struct{ key, v string }{
		{"master_name", c.MasterName}, {"username", c.Username}, {"sentinel_username", c.SentinelUsername},
		{"client_name", c.ClientName},
	} {
		if s.v != "" {
			add(slog.String(s.key, s.v))
		}
	}
	if c.Password != "" {
		add(slog.String("password", redacted))
	}
	if c.SentinelPassword != "" {
		add(slog.String("sentinel_password", redacted))
	}
	if c.DB != 0 {
		add(slog.Int("db", c.DB))
	}
	if c.TLSConfig != nil {
		add(slog.Bool("tls", true))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"dial_timeout", c.DialTimeout}, {"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout},
		{"probe_interval", c.ProbeInterval},
	} {
		if d.v != 0 {
			add(slog.Duration(d.key, d.v))
		}
	}
	if c.FailureThreshold != 0 {
		add(slog.Int("failure_threshold", c.FailureThreshold))
	}
	for _, l := range []struct {
		key string
		l   LaneConfig
	}{{"request", c.Request}, {"background", c.Background}} {
		if l.l != (LaneConfig{}) {
			add(slog.Group(l.key, slog.Int("size", l.l.Size), slog.Duration("max_wait", l.l.MaxWait), slog.Int("max_waiters", l.l.MaxWaiters)))
		}
	}
	if c.Blocking != (BlockingConfig{}) {
		add(slog.Group("blocking", slog.Int("size", c.Blocking.Size), slog.Bool("no_blocking", c.Blocking.NoBlocking)))
	}
	if len(c.Hooks) > 0 {
		add(slog.Int("hooks", len(c.Hooks)))
	}
	return slog.GroupValue(as...)
}

// redactURL is raw with its password replaced by xxxxx; a URL that does
// not parse is not shown at all (its parts cannot be told apart, and a
// password may be any of them).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse; not shown)"
	}
	if u.RawQuery != "" {
		// URL.Redacted hides the user info only: a query option go-redis
		// does not know (?password=, which other clients accept and
		// go-redis refuses) shows its name, not its value.
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = "(a query that does not parse; not shown)"
		} else {
			for k, vs := range q {
				if !urlOption(k) {
					for i := range vs {
						vs[i] = redacted
					}
				}
			}
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}

// urlOption reports whether k is a query option of go-redis's ParseURL:
// none holds a secret (it takes the credentials from the user info only).
func urlOption(k string) bool {
	switch k {
	case "client_name", "conn_max_idle_time", "conn_max_lifetime", "conn_max_lifetime_jitter",
		"db", "dial_timeout", "idle_timeout", "max_active_conns", "max_concurrent_dials",
		"max_conn_age", "max_idle_conns", "max_retries", "max_retry_backoff",
		"min_idle_conns", "min_retry_backoff", "pipeline_pool_size", "pipeline_read_buffer_size",
		"pipeline_write_buffer_size", "pool_fifo", "pool_size", "pool_timeout",
		"protocol", "read_timeout", "skip_verify", "write_timeout", "addr":
		return true
	}
	return false
}

// String is the Config as LogValue shows it, without a secret: fmt's %v,
// %+v and %s print it (a Config in log.Printf, a panic's value).
func (c Config) String() string { return c.LogValue().String() }

// GoString is String, for fmt's %#v.
func (c Config) GoString() string { return "pool.Config" + c.LogValue().String() }

// redactAddr is an address of Config.Addrs without user info or query
// (neither is part of a host:port: a URL put there by mistake).
func redactAddr(a string) string {
	if q := strings.IndexByte(a, '?'); q >= 0 {
		a = a[:q] + "?" + redacted
	}
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return a
	}
	if i := strings.Index(a, "://"); i >= 0 && i < at {
		return a[:i+3] + redacted + "@" + a[at+1:]
	}
	return redacted + "@" + a[at+1:]
}
