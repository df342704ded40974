package pool

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

type panicky struct{}

func (*panicky) MarshalBinary() ([]byte, error) { panic("boom") }

// A panic inside a command (here an argument's MarshalBinary), recovered by
// the caller as net/http does, must give the lane's slot back.
func TestPanicDoesNotKeepTheSlot(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, Request: LaneConfig{Size: 1, MaxWait: 100 * time.Millisecond}})
	ctx := context.Background()
	func() {
		defer func() { require.NotNil(t, recover()) }()
		p.Client().Set(ctx, "k", &panicky{}, 0)
	}()
	require.Zero(t, p.Stats().Request.InUse)
	func() {
		defer func() { require.NotNil(t, recover()) }()
		pipe := p.Client().Pipeline()
		pipe.Set(ctx, "k", &panicky{}, 0)
		_, _ = pipe.Exec(ctx)
	}()
	require.Zero(t, p.Stats().Request.InUse)
	require.NoError(t, p.Client().Ping(ctx).Err())
}

// A reservation serves commands or subscriptions, not both, so its sockets
// stay within its size (go-redis keeps Pub/Sub sockets in a pool of their
// own).
func TestReservationServesOneUse(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}})
	ctx := context.Background()

	cmds, err := p.ReserveBlocking("commands", 1)
	require.NoError(t, err)
	require.NoError(t, cmds.Client().Ping(ctx).Err())
	_, err = cmds.Subscribe(ctx, "ch")
	require.ErrorIs(t, err, ErrReservationUse)
	require.Contains(t, err.Error(), `"commands"`)

	subs, err := p.ReserveBlocking("subscriptions", 1)
	require.NoError(t, err)
	sub, err := subs.Subscribe(ctx, "ch")
	require.NoError(t, err)
	defer sub.Close()
	err = subs.Client().Ping(ctx).Err()
	require.ErrorIs(t, err, ErrReservationUse)

	for _, r := range p.Stats().Blocking.Reservations {
		require.LessOrEqual(t, r.Open, r.Size, "reservation %s", r.Owner)
	}
}
