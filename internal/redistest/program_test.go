package redistest

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLaunchRelaunchClose(t *testing.T) {
	Binary(t, "redis-server") // skips (or fails under BOUNDED_REQUIRE_REDIS=1) without it
	ctx := context.Background()
	r, err := Launch(Options{})
	require.NoError(t, err)
	require.NotEqual(t, "127.0.0.1:6379", r.Addr(), "never the machine's own Redis")
	out, err := r.Do(ctx, "PING")
	require.NoError(t, err)
	require.Equal(t, "PONG", out)

	require.ErrorContains(t, r.Relaunch(), "is running")
	require.NoError(t, r.Stop())
	require.NoError(t, r.Relaunch())
	out, err = r.Do(ctx, "PING")
	require.NoError(t, err)
	require.Equal(t, "PONG", out)

	require.NoError(t, r.Close())
	require.Zero(t, r.PID())
	_, err = os.Stat(r.Dir())
	require.ErrorIs(t, err, os.ErrNotExist, "Close removes the server's directory")
	require.NoError(t, r.Close(), "closing twice does nothing")
}
