package pool

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// countingHook records, per command name, the calls it sees and their
// errors (issue 19: redisotel or a user's own instrumentation on every lane).
type countingHook struct {
	mu      sync.Mutex
	calls   map[string]int
	refused map[string]int
	dials   int
}

func newCountingHook() *countingHook {
	return &countingHook{calls: map[string]int{}, refused: map[string]int{}}
}

func (h *countingHook) seen(cmd redis.Cmder, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	name := strings.ToUpper(cmd.Name())
	if sub, ok := cmd.Args()[min(1, len(cmd.Args())-1)].(string); ok && name == "CLIENT" {
		name += " " + strings.ToUpper(sub)
	}
	h.calls[name]++
	if err != nil && strings.Contains(err.Error(), "pool: ") {
		h.refused[name]++
	}
}

func (h *countingHook) count(name string) (calls, refused int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[name], h.refused[name]
}

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.mu.Lock()
		h.dials++
		h.mu.Unlock()
		return next(ctx, network, addr)
	}
}

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.seen(cmd, err)
		return err
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			h.seen(c, err)
		}
		return err
	}
}

// Config.Hooks are added to every lane's client, reservations included.
// They run outside the lane's own hook: they see every call, refused ones
// with their error, and the lane still refuses what it refuses.
func TestHooksSeeEveryLane(t *testing.T) {
	srv := redistest.Server(t)
	h := newCountingHook()
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, Hooks: []redis.Hook{h}})
	ctx := context.Background()

	require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), redis.Nil)
	_, err := p.Background().Pipelined(ctx, func(pl redis.Pipeliner) error {
		pl.Set(ctx, "k", "v", 0)
		pl.Incr(ctx, "n")
		return nil
	})
	require.NoError(t, err)
	res, err := p.ReserveBlocking("mover", 1)
	require.NoError(t, err)
	require.NoError(t, p.Client().RPush(ctx, "src", "x").Err())
	require.Equal(t, "x", res.Client().BLMove(ctx, "src", "dst", "LEFT", "RIGHT", 0).Val())

	for _, name := range []string{"GET", "SET", "INCR", "BLMOVE", "RPUSH"} {
		calls, _ := h.count(name)
		require.Equal(t, 1, calls, name)
	}
	h.mu.Lock()
	require.Positive(t, h.dials, "the hooks' DialHook runs")
	h.mu.Unlock()

	// A refused command is still refused; the hook sees it with its error.
	require.ErrorIs(t, p.Client().BLPop(ctx, 0, "src").Err(), ErrBlockingCommand)
	require.ErrorIs(t, p.Client().Do(ctx, "CLIENT", "PAUSE", 1000).Err(), ErrRefusedCommand)
	calls, refused := h.count("BLPOP")
	require.Equal(t, 1, calls)
	require.Equal(t, 1, refused)
	calls, refused = h.count("CLIENT PAUSE")
	require.Equal(t, 1, calls)
	require.Equal(t, 1, refused)
	require.True(t, p.Healthy())
}

// Config.Instrument gets every lane's and reservation's client, for
// instrumentation that takes a client (redisotel.InstrumentTracing); its
// hooks too run outside the lane's. Its error fails New or ReserveBlocking.
func TestInstrumentGetsEveryClient(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	h := newCountingHook()
	var clients int
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, Instrument: func(c redis.UniversalClient) error {
		clients++
		if clients > 3 {
			return errors.New("no more")
		}
		c.AddHook(h)
		return nil
	}})
	require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), redis.Nil)
	require.ErrorIs(t, p.Background().Get(ctx, "k").Err(), redis.Nil)
	res, err := p.ReserveBlocking("r", 1)
	require.NoError(t, err)
	require.ErrorIs(t, res.Client().Get(ctx, "k").Err(), redis.Nil)
	calls, _ := h.count("GET")
	require.Equal(t, 3, calls)
	require.ErrorIs(t, p.Client().BLPop(ctx, 0, "k").Err(), ErrBlockingCommand)
	_, refused := h.count("BLPOP")
	require.Equal(t, 1, refused, "outside the lane")

	_, err = p.ReserveBlocking("r2", 1)
	require.ErrorContains(t, err, "Config.Instrument on the blocking lane: no more")
	require.Len(t, p.Stats().Blocking.Reservations, 1)

	_, err = New(Config{Addrs: []string{srv.Addr()}, Instrument: func(redis.UniversalClient) error { return errors.New("boom") }})
	require.ErrorContains(t, err, "pool: Config.Instrument on the request lane: boom")
}
