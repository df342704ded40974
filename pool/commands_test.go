package pool

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// BLOCK is an option of XREAD and XREADGROUP only before STREAMS: after it
// come key names and IDs, and a stream may be named "block" (as may a group
// or a consumer). Such a read does not block and runs on a shared lane.
func TestStreamNamedBlockIsNotABlockingRead(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	c := p.Client()
	require.NoError(t, c.XAdd(ctx, &redis.XAddArgs{Stream: "block", ID: "1-1", Values: []string{"f", "v"}}).Err())

	v, err := c.Do(ctx, "XREAD", "COUNT", 1, "STREAMS", "block", "0-0").Result()
	require.NoError(t, err)
	require.NotEmpty(t, v)
	got, err := c.XRead(ctx, &redis.XReadArgs{Streams: []string{"block", "0-0"}, Count: 1, Block: -1}).Result()
	require.NoError(t, err)
	require.Len(t, got, 1)

	require.NoError(t, c.XGroupCreate(ctx, "block", "block", "0").Err())
	v, err = p.Background().Do(ctx, "xreadgroup", "GROUP", "block", "streams", "count", 1, "STREAMS", "block", ">").Result()
	require.NoError(t, err)
	require.NotEmpty(t, v)

	// Before STREAMS, in any case, BLOCK blocks: BLOCK 0 for ever, so it is
	// refused as before, whatever its value.
	require.ErrorIs(t, c.Do(ctx, "XREAD", "bLoCk", 0, "STREAMS", "block", "$").Err(), ErrBlockingCommand)
	require.ErrorIs(t, c.Do(ctx, "XREAD", "COUNT", "1", "BLOCK", "10", "STREAMS", "block", "$").Err(), ErrBlockingCommand)
	require.ErrorIs(t, c.Do(ctx, "XREADGROUP", "GROUP", "block", "c", "BLOCK", 0, "STREAMS", "block", ">").Err(), ErrBlockingCommand)
	require.ErrorIs(t, c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "block", Consumer: "c", Streams: []string{"block", ">"}}).Err(), ErrBlockingCommand, "go-redis sends BLOCK 0 for a zero Block")
}
