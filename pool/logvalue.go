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
// REDACTED when set, the password of URL as xxxxx (a URL that does not
// parse is not shown), and an address of Addrs that holds user info (a
// URL put there by mistake) loses it. Fields at their zero value are left
// out; Logger, Now, Hooks and Instrument are not logged (Hooks by count).
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
	return u.Redacted()
}

// redactAddr is an address of Config.Addrs without user info.
func redactAddr(a string) string {
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return a
	}
	if i := strings.Index(a, "://"); i >= 0 && i < at {
		return a[:i+3] + redacted + "@" + a[at+1:]
	}
	return redacted + "@" + a[at+1:]
}
