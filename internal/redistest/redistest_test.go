package redistest

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMini(t *testing.T) {
	m := Mini(t)
	require.NoError(t, m.Set("k", "v"))
	require.NotEmpty(t, m.Addr())
}

func TestServerStartsStopsAndRestarts(t *testing.T) {
	r := ServerWith(t, Options{AppendOnly: true})
	ctx := context.Background()
	require.NotEqual(t, "127.0.0.1:6379", r.Addr(), "never the machine's own Redis")
	pid := r.PID()
	require.NotZero(t, pid)

	out, err := r.Do(ctx, "SET", "k", "v")
	require.NoError(t, err)
	require.Equal(t, "OK", out)

	r.Restart()
	require.NotEqual(t, pid, r.PID())
	out, err = r.Do(ctx, "GET", "k")
	require.NoError(t, err)
	require.Equal(t, "v", out, "append-only data survives a restart")

	stats, err := r.CommandStats(ctx)
	require.NoError(t, err)
	require.Contains(t, stats, "get")
	require.Positive(t, TotalCalls(stats))

	clients, err := r.Clients(ctx)
	require.NoError(t, err)
	require.Len(t, clients, 1, "only our own CLIENT LIST connection")

	_, err = r.Do(ctx, "NOSUCHCOMMAND")
	require.ErrorContains(t, err, "unknown command")

	r.Kill()
	require.Zero(t, r.PID())
	_, err = r.Do(ctx, "PING")
	require.Error(t, err)
	r.Start()
	out, err = r.Do(ctx, "PING")
	require.NoError(t, err)
	require.Equal(t, "PONG", out)
	require.True(t, strings.Contains(r.Log(), "Ready to accept connections"), r.Log())
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_get:calls=3,usec=5,usec_per_call=1.67,rejected_calls=0,failed_calls=0\r\ncmdstat_client|list:calls=2,usec=1\r\n"
	s := ParseCommandStats(info)
	require.Equal(t, map[string]int64{"get": 3, "client|list": 2}, s)
	require.Equal(t, int64(3), TotalCalls(s, "client|list"))
}
