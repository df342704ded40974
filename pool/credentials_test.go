package pool

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

const secret = "s3cr3t-Pa55"

// requireNoSecret fails when text holds the password or a large part of it.
func requireNoSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, part := range []string{secret, secret[:6], secret[5:]} {
		require.NotContains(t, text, part, "%s leaks the password: %s", what, text)
	}
}

// TestMalformedURLDoesNotLeakPassword: a URL that does not parse used to be
// quoted whole in New's error (net/url quotes its input), password included;
// a service that logs why it could not start wrote its Redis password to
// the log.
func TestMalformedURLDoesNotLeakPassword(t *testing.T) {
	for _, u := range []string{
		"redis://:" + secret + "@127.0.0.1:badport/0",
		"redis://alice:" + secret + "@[::1/0",
		"redis://alice:" + secret + "%zz@127.0.0.1:6390/0",
		"redis://alice:" + secret + "@127.0.0.1:6390/notadb",
		"redis://alice:" + secret + "@127.0.0.1:6390/0?pool_size=x",
		"redis://alice:" + secret + "@127.0.0.1:6390/0?nonsense=1",
		"redis://alice:" + secret + "@127.0.0.1:6390/0?pool_size=10",
		"unix://alice:" + secret + "@/tmp/redis.sock",
		"http://alice:" + secret + "@127.0.0.1:6390",
		"redis://alice:" + secret + "@bad host:6390",
		"redis://alice:" + secret + "/@x@127.0.0.1:badport",
	} {
		t.Run(u, func(t *testing.T) {
			_, err := New(Config{URL: u})
			require.ErrorIs(t, err, ErrInvalidConfig)
			require.ErrorContains(t, err, "Config.URL")
			requireNoSecret(t, "New's error", err.Error())
			requireNoSecret(t, "New's error (%+v)", fmt.Sprintf("%+v", err))
		})
	}
}

// TestFailedDialDoesNotLeakPassword: a pool with a password whose dials
// fail (nothing listens), or whose password Redis refuses, returns and
// logs errors that say so without the password.
func TestFailedDialDoesNotLeakPassword(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, cfg Config) {
		logs := testutil.NewLogs()
		cfg.Logger = logs.Logger()
		cfg.FailureThreshold = 1
		cfg.DialTimeout = time.Second
		p := newPool(t, cfg)
		var errs []string
		for range 3 {
			if err := p.Ping(ctx); err != nil {
				errs = append(errs, err.Error())
			}
			if err := p.Background().Get(ctx, "k").Err(); err != nil {
				errs = append(errs, err.Error())
			}
		}
		require.NotEmpty(t, errs, "the dials were meant to fail")
		if h := p.Health(); h.LastError != nil {
			errs = append(errs, h.LastError.Error())
		}
		requireNoSecret(t, "errors", strings.Join(errs, "\n"))
		for _, r := range logs.Records() {
			requireNoSecret(t, "log record", r.String())
		}
		requireNoSecret(t, "Stats", fmt.Sprintf("%+v", p.Stats()))
	}
	t.Run("refused connection, URL", func(t *testing.T) {
		check(t, Config{URL: "redis://alice:" + secret + "@127.0.0.1:1/0"})
	})
	t.Run("refused connection, Password", func(t *testing.T) {
		check(t, Config{Addrs: []string{"127.0.0.1:1"}, Username: "alice", Password: secret})
	})
	t.Run("wrong password", func(t *testing.T) {
		srv := redistest.ServerWith(t, redistest.Options{Password: "the-right-one"})
		check(t, Config{URL: "redis://:" + secret + "@" + srv.Addr()})
	})
}

func TestDropQuoted(t *testing.T) {
	for in, want := range map[string]string{
		``:                        ``,
		`no quotes`:               `no quotes`,
		`invalid port ":x" after`: `invalid port _ after`,
		`a "b" c "d"`:             `a _ c _`,
		`escaped "a\"b" end`:      `escaped _ end`,
		`unterminated "secret`:    `unterminated _`,
		`"whole"`:                 `_`,
		`trailing backslash "ab\`: `trailing backslash _`,
	} {
		require.Equal(t, want, dropQuoted(in, "_"), "%q", in)
	}
	err := urlError("redis://u:"+secret+"@h:badport", fmt.Errorf("wrapped: %w", &url.Error{Op: "parse", URL: "redis://u:" + secret + "@h:badport", Err: errors.New(`invalid port ":badport" after host`)}))
	require.Equal(t, `Config.URL: invalid port (value not shown: the URL holds credentials) after host`, err.Error())
	err = urlError("redis://h:6379/x", errors.New(`redis: invalid database number: "x"`))
	require.Equal(t, `Config.URL: redis: invalid database number: "x"`, err.Error(), "without credentials the value helps")
}
