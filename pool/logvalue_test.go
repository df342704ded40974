package pool

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// logged is cfg as a JSON and a text handler write it.
func logged(cfg Config) string {
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("pool", "cfg", cfg)
	slog.New(slog.NewTextHandler(&b, nil)).Info("pool", "cfg", cfg)
	return b.String()
}

// Logging a whole Config never shows a password: in the fields, in URLs
// of every form (percent-encoded, rediss with a query, one that does not
// parse) and in an address of Addrs that holds user info.
func TestConfigLogValueRedactsSecrets(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg    Config
		secret []string // none may appear
		shown  []string // each must
	}{
		"password fields": {
			cfg:    Config{Addrs: []string{"sentinel-1:26379"}, MasterName: "mymaster", Username: "app", Password: "hunter2-pw", SentinelUsername: "sen", SentinelPassword: "sentinel-pw"},
			secret: []string{"hunter2-pw", "sentinel-pw"},
			shown:  []string{"sentinel-1:26379", "mymaster", "app", "sen", redacted},
		},
		"URL with a password": {
			cfg:    Config{URL: "redis://user:s3cret-pw@cache.internal:6380/2"},
			secret: []string{"s3cret-pw"},
			shown:  []string{"user", "cache.internal:6380", "xxxxx"},
		},
		"URL with only a password": {
			cfg:    Config{URL: "redis://:only-pw@cache.internal:6379"},
			secret: []string{"only-pw"},
			shown:  []string{"cache.internal:6379"},
		},
		"percent-encoded password": {
			cfg:    Config{URL: "redis://u:p%40ss%2Fw0rd%3A@h:6379/0"},
			secret: []string{"p%40ss", "p@ss", "w0rd"},
			shown:  []string{"h:6379"},
		},
		"rediss with a query and a fragment": {
			cfg:    Config{URL: "rediss://u:tls-pw@h:6379/1?dial_timeout=3s&client_name=api#frag"},
			secret: []string{"tls-pw"},
			shown:  []string{"rediss://", "dial_timeout=3s"},
		},
		"URL that does not parse": {
			cfg:    Config{URL: "redis://u:top-secret/w@host:6379"},
			secret: []string{"top-secret", "w@host"},
			shown:  []string{"not shown"},
		},
		"URL in Addrs by mistake": {
			cfg:    Config{Addrs: []string{"redis://:addr-pw@h1:6379", "u:pw2-secret@h2:6379", "h3:6379"}},
			secret: []string{"addr-pw", "pw2-secret"},
			shown:  []string{"h1:6379", "h2:6379", "h3:6379"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			out := logged(tc.cfg)
			for _, s := range tc.secret {
				require.NotContains(t, out, s)
			}
			for _, s := range tc.shown {
				require.Contains(t, out, s)
			}
		})
	}
}

// The Config the pool works from, after New filled the fields of its URL
// in, logs without the password too; and what a Config logs is what an
// operator needs to read: addresses, lanes, timeouts, TLS.
func TestConfigLogValueAfterDefaults(t *testing.T) {
	cfg, err := Config{URL: "redis://app:filled-pw@h:6379/3", TLSConfig: &tls.Config{}, Request: LaneConfig{Size: 7}}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, "filled-pw", cfg.Password, "the test expects the URL's password in the field")
	out := logged(cfg)
	require.NotContains(t, out, "filled-pw")
	for _, s := range []string{`"db":3`, `"tls":true`, `"size":7`, "h:6379", `"password":"REDACTED"`} {
		require.Contains(t, out, s)
	}
	require.Contains(t, out, `"dial_timeout":`)
}
