package pool

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// A WAIT whose timeout is not under the lane's ReadTimeout would run into
// the socket's read deadline when the replicas are slow to acknowledge:
// an I/O timeout that counts toward marking a healthy Redis down, and a
// write already sent in the same pipeline. It is refused before anything
// is sent, with an error that says why.
func TestWaitLongerThanReadTimeoutIsRefused(t *testing.T) {
	srv := redistest.Server(t) // no replica: WAIT 1 runs its whole timeout
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, ReadTimeout: time.Second, FailureThreshold: 1})
	ctx := context.Background()

	pipe := p.Client().Pipeline()
	push := pipe.LPush(ctx, "wait-review", "job")
	wait := pipe.Do(ctx, "WAIT", 1, 1000)
	_, err := pipe.Exec(ctx)
	require.ErrorIs(t, err, ErrBlockingCommand)
	require.ErrorContains(t, err, "ReadTimeout")
	require.ErrorIs(t, push.Err(), ErrBlockingCommand, "nothing of the pipeline is sent")
	require.ErrorIs(t, wait.Err(), ErrBlockingCommand)
	require.ErrorIs(t, p.Client().Do(ctx, "WAITAOF", 1, 0, 5000).Err(), ErrBlockingCommand)
	require.ErrorIs(t, p.Background().Do(ctx, "WAIT", "1", "1500").Err(), ErrBlockingCommand)

	n, err := p.Client().LLen(ctx, "wait-review").Result()
	require.NoError(t, err)
	require.Zero(t, n, "the write was not sent")
	require.True(t, p.Healthy())
	require.Zero(t, p.Health().Failures)

	// Under ReadTimeout it runs, and says no replica has it.
	v, err := p.Client().Do(ctx, "WAIT", 1, 20).Int()
	require.NoError(t, err)
	require.Zero(t, v)
}

// A probe granted by AdmitContext whose caller gives up before its command
// runs is lost for one ProbeInterval, not for good: the next interval's
// probe, by any caller, finds Redis back.
func TestCancelledProbeIsNotLostForGood(t *testing.T) {
	m, p, clock := downOnAManualClock(t)
	ctx := context.Background()
	require.False(t, p.Healthy())
	require.NoError(t, m.Restart())

	clock.Advance(time.Second)
	cctx, cancel := context.WithCancel(ctx)
	actx, err := p.AdmitContext(cctx)
	require.NoError(t, err)
	cancel()
	require.ErrorIs(t, p.Client().Get(actx, "k").Err(), context.Canceled)
	require.False(t, p.Healthy(), "a cancelled call says nothing about Redis")
	require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), ErrUnavailable, "the interval's probe was granted")

	clock.Advance(time.Second)
	require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), redis.Nil, "the next interval's probe reaches Redis")
	require.True(t, p.Healthy())
}
