package pool

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// TestSentinelFailureDoesNotLeakPasswords: unreachable sentinels, with a
// sentinel password and a Redis password set, fail without either in the
// errors, the logs, the health state or Stats.
func TestSentinelFailureDoesNotLeakPasswords(t *testing.T) {
	ctx := context.Background()
	logs := testutil.NewLogs()
	p := newPool(t, Config{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, MasterName: "mymaster",
		SentinelUsername: "sentinel-user", SentinelPassword: secret, Username: "alice", Password: secret,
		Logger: logs.Logger(), FailureThreshold: 1, DialTimeout: time.Second})
	var errs []string
	for range 3 {
		if err := p.Ping(ctx); err != nil {
			errs = append(errs, err.Error(), fmt.Sprintf("%+v", err))
		}
	}
	require.NotEmpty(t, errs, "the sentinels were meant to be unreachable")
	if h := p.Health(); h.LastError != nil {
		errs = append(errs, h.LastError.Error())
	}
	requireNoSecret(t, "errors", strings.Join(errs, "\n"))
	for _, r := range logs.Records() {
		requireNoSecret(t, "log record", r.String())
	}
	requireNoSecret(t, "Stats", fmt.Sprintf("%+v", p.Stats()))
}

// TestMoreMalformedURLsDoNotLeakPassword: the forms the first list lacks:
// TLS, a percent-encoded password, a password in the query (go-redis
// refuses the option), a fragment or query inside an unencoded password.
func TestMoreMalformedURLsDoNotLeakPassword(t *testing.T) {
	enc := strings.ReplaceAll(secret, "-", "%2D")
	for _, u := range []string{
		"rediss://alice:" + secret + "@127.0.0.1:badport/0",
		"redis://alice:" + enc + "@127.0.0.1:badport/0",
		"redis://alice:" + enc + "@127.0.0.1:6390/x",
		"redis://127.0.0.1:6390/0?password=" + secret,
		"redis://127.0.0.1:6390/0?password=" + secret + "&dial_timeout=bad",
		"redis://alice:" + secret + "#x@127.0.0.1:6390/0",
		"redis://alice:" + secret + "?x@127.0.0.1:6390/0",
		"redis://alice:" + secret + "@127.0.0.1:6390/0?protocol=" + secret,
	} {
		t.Run(u, func(t *testing.T) {
			_, err := New(Config{URL: u})
			require.ErrorIs(t, err, ErrInvalidConfig)
			requireNoSecret(t, "New's error", err.Error())
		})
	}
}
