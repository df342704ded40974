package pool

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// ReserveBlockingWith: a RESP2 reservation whose connections run OnConnect
// before they subscribe, where connection set-up (HELLO, CLIENT TRACKING)
// passes the reservation's hooks and its gate; a bad protocol is refused.
func TestReserveBlockingWith(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()

	_, err := p.ReserveBlockingWith("bad", 1, ReserveOptions{Protocol: 4})
	require.ErrorContains(t, err, `ReserveBlocking("bad"): ReserveOptions.Protocol must be 2 or 3, got 4`)
	require.Zero(t, p.Stats().Blocking.Reserved, "nothing reserved")

	var calls atomic.Int32
	var proto atomic.Int64
	r, err := p.ReserveBlockingWith("sub", 1, ReserveOptions{
		Protocol: 2,
		OnConnect: func(ctx context.Context, cn *redis.Conn) error {
			calls.Add(1)
			hello, err := cn.Do(ctx, "HELLO").Slice()
			if err != nil {
				return err
			}
			for i := 0; i+1 < len(hello); i += 2 {
				if hello[i] == "proto" {
					proto.Store(hello[i+1].(int64))
				}
			}
			return cn.Do(ctx, "CLIENT", "TRACKING", "ON", "BCAST").Err()
		},
	})
	require.NoError(t, err)
	defer func() { require.NoError(t, r.Release()) }()
	sub, err := r.Subscribe(ctx, "ch")
	require.NoError(t, err)
	defer func() { require.NoError(t, sub.Close()) }()
	require.Equal(t, int32(1), calls.Load())
	require.Equal(t, int64(2), proto.Load(), "the connection speaks RESP2")

	// A HELLO of another protocol is still refused on it.
	q, err := p.ReserveBlockingWith("cmds", 1, ReserveOptions{Protocol: 2})
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Release()) }()
	require.NoError(t, q.Client().Ping(ctx).Err())
	err = q.Client().Do(ctx, "HELLO", "3").Err()
	require.ErrorIs(t, err, ErrRefusedCommand)
	require.ErrorContains(t, err, "RESP2")
}
