package pool

import (
	"context"
	"strings"
	"testing"
	"time"

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

// WAIT and WAITAOF read their timeout as a number whatever integer type the
// caller passed it as; a negative or unreadable one is refused as before,
// and so is one too long to count in a time.Duration.
func TestWaitTimeoutOfAnyIntegerType(t *testing.T) {
	srv := redistest.Server(t) // no replica: WAIT 1 runs its whole timeout
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, ReadTimeout: time.Second})
	ctx := context.Background()
	for _, ms := range []any{int8(5), int16(5), int32(5), uint(5), uint8(5), uint16(5), uint32(5), uint64(5)} {
		v, err := p.Client().Do(ctx, "WAIT", 1, ms).Int()
		require.NoError(t, err, "%T", ms)
		require.Zero(t, v)
		// (The server may predate WAITAOF: any answer but a refusal will do.)
		require.NotErrorIs(t, p.Background().Do(ctx, "WAITAOF", 0, 0, ms).Err(), ErrBlockingCommand, "%T", ms)
	}
	for _, ms := range []any{int32(0), uint64(0), int32(-1), int8(-5), "x", 1.5, uint32(1000), uint64(1 << 63), int64(1 << 62)} {
		require.ErrorIs(t, p.Client().Do(ctx, "WAIT", 1, ms).Err(), ErrBlockingCommand, "%T %v", ms, ms)
	}
	require.True(t, p.Healthy())
}

// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and MONITOR sent as commands would leave
// a pooled connection of a shared lane in subscribe or monitor mode, for the
// next caller to read messages as replies. They are refused, with the way
// to subscribe; a reservation's Subscribe keeps working.
func TestSubscribeAndMonitorRefusedOnSharedLanes(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, Request: LaneConfig{Size: 1}, Background: LaneConfig{Size: 1}})
	ctx := context.Background()
	for _, c := range []redis.UniversalClient{p.Client(), p.Background()} {
		for _, args := range [][]any{{"subscribe", "ch"}, {"PSUBSCRIBE", "c*"}, {"SSubscribe", "ch"}, {"monitor"}} {
			err := c.Do(ctx, args...).Err()
			require.ErrorIs(t, err, ErrBlockingCommand, "%v", args)
			require.ErrorContains(t, err, strings.ToUpper(args[0].(string))+" on the")
			require.ErrorContains(t, err, "ReserveBlocking")
		}
		pipe := c.Pipeline()
		pipe.Do(ctx, "SUBSCRIBE", "ch")
		_, err := pipe.Exec(ctx)
		require.ErrorIs(t, err, ErrBlockingCommand)
		require.ErrorContains(t, err, "SUBSCRIBE in a pipeline")
		require.NoError(t, c.Set(ctx, "k", "v", 0).Err(), "the lane's one connection is not subscribed")
	}
	require.True(t, p.Healthy())

	res, err := p.ReserveBlocking("subscriber", 1)
	require.NoError(t, err)
	sub, err := res.Subscribe(ctx, "ch")
	require.NoError(t, err)
	require.NoError(t, p.Client().Publish(ctx, "ch", "hello").Err())
	msg, err := sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "hello", msg.Payload)
	require.NoError(t, sub.Close())
}

// CLIENT PAUSE pauses every client of the server, this pool's lanes
// included: sent through the pool it would stall every caller and count
// their timeouts against a healthy Redis. No lane sends it, a reservation
// neither; CLIENT UNPAUSE, the way out of a pause, passes.
func TestClientPauseRefusedOnEveryLane(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	t.Cleanup(func() { _, _ = srv.Do(context.Background(), "CLIENT", "UNPAUSE") })
	res, err := p.ReserveBlocking("admin", 1)
	require.NoError(t, err)
	for _, c := range []redis.UniversalClient{p.Client(), p.Background(), res.Client()} {
		err := c.Do(ctx, "client", "pause", 60000, "WRITE").Err()
		require.ErrorIs(t, err, ErrRefusedCommand)
		require.ErrorContains(t, err, "CLIENT PAUSE")
		pipe := c.Pipeline()
		pipe.Do(ctx, "CLIENT", "PAUSE", "60000")
		_, err = pipe.Exec(ctx)
		require.ErrorIs(t, err, ErrRefusedCommand)
		require.NoError(t, c.Do(ctx, "CLIENT", "UNPAUSE").Err())
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	require.NoError(t, p.Client().Set(wctx, "k", "v", 0).Err(), "writes are not paused")
	require.True(t, p.Healthy())
}

// SELECT changes the database of the connection it runs on, and go-redis
// puts that connection back in the lane's pool: its later callers would
// read and write another database. A SELECT of another database than the
// pool's is refused on every lane; go-redis's own SELECT of Config.DB,
// which it sends through the hooks on every new connection, still runs.
func TestSelectOfAnotherDatabaseRefused(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, DB: 2, Request: LaneConfig{Size: 1}})
	ctx := context.Background()
	db2 := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: 2})
	defer db2.Close()
	require.NoError(t, p.Client().Set(ctx, "k", "v", 0).Err())
	require.Equal(t, "v", db2.Get(ctx, "k").Val(), "the pool's connections are on DB 2")

	err := p.Client().Do(ctx, "SELECT", 0).Err()
	require.ErrorIs(t, err, ErrRefusedCommand)
	require.ErrorContains(t, err, "SELECT 0 on the request lane")
	require.Equal(t, "v", p.Client().Get(ctx, "k").Val(), "the lane's one connection is still on DB 2")
	require.ErrorIs(t, p.Background().Do(ctx, "select", "1").Err(), ErrRefusedCommand)
	require.ErrorIs(t, p.Client().Do(ctx, "select", 1.0).Err(), ErrRefusedCommand, "Redis reads 1")

	pipe := p.Client().Pipeline()
	pipe.Select(ctx, 0)
	_, err = pipe.Exec(ctx)
	require.ErrorIs(t, err, ErrRefusedCommand, "a pipeline of connection set-up only")
	pipe = p.Client().Pipeline()
	get := pipe.Get(ctx, "k")
	pipe.Select(ctx, 0)
	_, err = pipe.Exec(ctx)
	require.ErrorIs(t, err, ErrRefusedCommand)
	require.ErrorIs(t, get.Err(), ErrRefusedCommand, "nothing of the pipeline is sent")

	conn := p.Client().(*redis.Client).Conn()
	require.ErrorIs(t, conn.Select(ctx, 0).Err(), ErrRefusedCommand)
	require.NoError(t, conn.Close())

	// The pool's own database may be selected: nothing changes.
	require.NoError(t, p.Client().Do(ctx, "SELECT", "2").Err())
	res, err := p.ReserveBlocking("reader", 1)
	require.NoError(t, err)
	require.ErrorIs(t, res.Client().Do(ctx, "SELECT", 3).Err(), ErrRefusedCommand)
	require.Equal(t, "v", res.Client().Get(ctx, "k").Val(), "a new connection is set up on DB 2")
	require.Equal(t, "v", p.Client().Get(ctx, "k").Val())
	require.True(t, p.Healthy())
}

// Classifying a command the lanes carry allocates nothing: it runs for
// every command of every lane (BenchmarkRequestLaneGet measures the whole
// call: 7 allocs/op, as a bare go-redis client).
func TestClassifyingAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	cmds := []redis.Cmder{
		redis.NewStringCmd(ctx, "get", "k"),
		redis.NewCmd(ctx, "SELECT", 2),
		redis.NewCmd(ctx, "client", "setname", "x"),
		redis.NewCmd(ctx, "AUTH", "u", "p"),
		redis.NewCmd(ctx, "hello", 3, "auth", "u", "p", "setname", "x"),
		redis.NewCmd(ctx, "XREAD", "COUNT", 1, "STREAMS", "block", "0-0"),
		redis.NewCmd(ctx, "WAIT", 1, int32(5)),
		redis.NewCmd(ctx, "ssubscribe"),
		redis.NewCmd(ctx, "BITCOUNT", "k"),
		redis.NewCmd(ctx, "BLPOP", "k", 1),
	}
	id := &identity{db: 2, username: "u", password: "p", name: "x"}
	allocs := testing.AllocsPerRun(100, func() {
		for _, c := range cmds {
			_ = refusedEverywhere(c, "", "request", id)
			_ = isConnInit(c)
			_ = isBlocking(c)
			_ = connMode(c)
			_ = waitTooLong(c, "request", time.Second)
		}
	})
	require.Zero(t, allocs)
}

// AUTH, HELLO and CLIENT SETNAME change who a connection is, its protocol
// and its name; go-redis puts it back in the lane's pool for later callers.
// One that sends anything else than what the pool itself sends on a new
// connection (its credentials, RESP3, the lane's name) is refused on every
// lane; go-redis's own connection set-up, with a password and a client
// name, still runs through the hooks.
func TestConnSetupOfAnotherIdentityRefused(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{Password: "secret"})
	ctx := context.Background()
	_, err := srv.Do(ctx, "ACL", "SETUSER", "other", "on", ">otherpw", "~*", "+@all")
	require.NoError(t, err)
	_, err = srv.Do(ctx, "ACL", "SETUSER", "app", "on", ">apppw", "~*", "+@all")
	require.NoError(t, err)

	t.Run("Password", func(t *testing.T) {
		p := newPool(t, Config{Addrs: []string{srv.Addr()}, Password: "secret", ClientName: "svc", Request: LaneConfig{Size: 1}})
		require.NoError(t, p.Client().Set(ctx, "k", "v", 0).Err(), "go-redis's HELLO 3 AUTH SETNAME passes")
		res, err := p.ReserveBlocking("r", 1)
		require.NoError(t, err)
		refused := []struct {
			c    redis.UniversalClient
			args []any
		}{
			{p.Client(), []any{"AUTH", "other", "otherpw"}},
			{p.Client(), []any{"auth", "default", "wrong"}},
			{p.Background(), []any{"AUTH", "nope"}},
			{p.Client(), []any{"HELLO", 2}},
			{p.Client(), []any{"hello", "3", "AUTH", "other", "otherpw"}},
			{p.Client(), []any{"HELLO", 3, "SETNAME", "x"}},
			{p.Client(), []any{"HELLO", 3, "SETNAME", "svc-background"}},
			{p.Client(), []any{"CLIENT", "SETNAME", "x"}},
			{p.Background(), []any{"client", "setname", "svc-request"}},
			{res.Client(), []any{"CLIENT", "SETNAME", "svc-request"}},
			{res.Client(), []any{"HELLO", 2}},
		}
		for _, r := range refused {
			err := r.c.Do(ctx, r.args...).Err()
			require.ErrorIs(t, err, ErrRefusedCommand, "%v", r.args)
			require.NotContains(t, err.Error(), "otherpw", "no credentials in errors")
			require.NotContains(t, err.Error(), "wrong")
		}
		pipe := p.Client().Pipeline()
		get := pipe.Get(ctx, "k")
		pipe.ClientSetName(ctx, "x")
		_, err = pipe.Exec(ctx)
		require.ErrorIs(t, err, ErrRefusedCommand)
		require.ErrorIs(t, get.Err(), ErrRefusedCommand, "nothing of the pipeline is sent")
		conn := p.Client().(*redis.Client).Conn()
		require.ErrorIs(t, conn.Hello(ctx, 2, "", "", "").Err(), ErrRefusedCommand)
		require.NoError(t, conn.Close())

		// What the pool sends itself changes nothing and passes.
		for _, ok := range []struct {
			c    redis.UniversalClient
			args []any
		}{
			{p.Client(), []any{"AUTH", "secret"}},
			{p.Client(), []any{"HELLO", 3, "AUTH", "default", "secret", "SETNAME", "svc-request"}},
			{p.Client(), []any{"HELLO"}},
			{p.Client(), []any{"CLIENT", "SETNAME", "svc-request"}},
			{p.Background(), []any{"CLIENT", "SETNAME", "svc-background"}},
			{res.Client(), []any{"CLIENT", "SETNAME", "svc-blocking-r"}},
		} {
			require.NoError(t, ok.c.Do(ctx, ok.args...).Err(), "%v", ok.args)
		}
		whoami, err := p.Client().Do(ctx, "ACL", "WHOAMI").Text()
		require.NoError(t, err)
		require.Equal(t, "default", whoami)
		name, err := p.Client().ClientGetName(ctx).Result()
		require.NoError(t, err)
		require.Equal(t, "svc-request", name)
		_, isMap := p.Client().Do(ctx, "HELLO").Val().(map[any]any)
		require.True(t, isMap, "still RESP3")
		require.True(t, p.Healthy())
	})

	t.Run("Username", func(t *testing.T) {
		p := newPool(t, Config{Addrs: []string{srv.Addr()}, Username: "app", Password: "apppw", Request: LaneConfig{Size: 1}})
		require.ErrorIs(t, p.Client().Do(ctx, "AUTH", "apppw").Err(), ErrRefusedCommand, "AUTH password is the default user")
		require.ErrorIs(t, p.Client().Do(ctx, "AUTH", "other", "otherpw").Err(), ErrRefusedCommand)
		require.NoError(t, p.Client().Do(ctx, "AUTH", "app", "apppw").Err())
		require.NoError(t, p.Client().Do(ctx, "HELLO", 3, "AUTH", "app", "apppw").Err())
		whoami, err := p.Client().Do(ctx, "ACL", "WHOAMI").Text()
		require.NoError(t, err)
		require.Equal(t, "app", whoami)
	})
}
