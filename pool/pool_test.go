package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func TestConfigValidationNamesTheField(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{URL: "redis://x:1", Addrs: []string{"y:2"}}, "Config.URL and Config.Addrs are mutually exclusive"},
		{Config{Addrs: []string{""}}, "Config.Addrs[0] is empty"},
		{Config{Request: LaneConfig{Size: -1}}, "Config.Request.Size must be at least 1, got -1"},
		{Config{Background: LaneConfig{MaxWait: -time.Second}}, "Config.Background.MaxWait must not be negative"},
		{Config{Request: LaneConfig{MaxWaiters: -2}}, "Config.Request.MaxWaiters must not be negative"},
		{Config{Blocking: BlockingConfig{Size: -3}}, "Config.Blocking.Size must not be negative, got -3"},
		{Config{Blocking: BlockingConfig{Size: 2, NoBlocking: true}}, "Config.Blocking.NoBlocking is set but Config.Blocking.Size is 2"},
		{Config{DialTimeout: -1}, "Config.DialTimeout must not be negative"},
		{Config{FailureThreshold: -1}, "Config.FailureThreshold must not be negative"},
		{Config{URL: "http://nope"}, "Config.URL"},
		{Config{Addrs: []string{"a:1", "b:2"}, DB: 2}, "Config.DB is 2 but Redis Cluster has only database 0"},
		{Config{DB: -1}, "Config.DB must not be negative"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			p, err := New(c.cfg)
			require.Nil(t, p)
			require.ErrorContains(t, err, c.want)
			require.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
}

func TestDefaults(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}})
	s := p.Stats()
	require.Equal(t, DefaultRequestSize, s.Request.Size)
	require.Equal(t, DefaultBackgroundSize, s.Background.Size)
	require.Equal(t, DefaultBlockingSize, s.Blocking.Size)
	require.Equal(t, DefaultRequestSize+DefaultBackgroundSize+DefaultBlockingSize, s.TotalSize)
	require.Equal(t, DefaultWaitersPerConn*DefaultRequestSize, p.request.gate.maxWaiters)
	require.True(t, s.Healthy)
	require.Zero(t, s.Open, "New does not connect")
	require.False(t, p.IsCluster())
}

func TestURLFillsConnectionFields(t *testing.T) {
	c, err := Config{URL: "redis://alice:secret@10.1.2.3:6390/4"}.withDefaults()
	require.NoError(t, err)
	o := c.universalOptions()
	require.Equal(t, []string{"10.1.2.3:6390"}, o.Addrs)
	require.Equal(t, "alice", o.Username)
	require.Equal(t, "secret", o.Password)
	require.Equal(t, 4, o.DB)
	require.Equal(t, -1, o.MaxRetries, "no hidden retries")
	require.Equal(t, -1, o.PipelinePoolSize, "no hidden pipeline pool")
	require.True(t, o.ContextTimeoutEnabled)

	lo := laneOptions(o, "bounded-request", 7, time.Second)
	require.Equal(t, 7, lo.MaxActiveConns, "the socket limit")
	require.Equal(t, dialBreakerThreshold, lo.PoolSize, "go-redis's dial breaker out of the way")
	require.Equal(t, 7, lo.MaxActiveConns)
	require.Equal(t, 0, o.PoolSize, "laneOptions copies")
}

// inFlightHook, added to a lane's client after the pool's own hook, runs
// inside the lane's gate: it counts the commands the gate let through to
// go-redis, independently of the gate's own count, and holds each until
// hold is closed.
type inFlightHook struct {
	now, max atomic.Int64
	hold     chan struct{}
}

func (h *inFlightHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *inFlightHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isConnInit(cmd) {
			return next(ctx, cmd)
		}
		n := h.now.Add(1)
		defer h.now.Add(-1)
		for m := h.max.Load(); n > m && !h.max.CompareAndSwap(m, n); m = h.max.Load() {
		}
		select {
		case <-h.hold:
		case <-time.After(10 * time.Second): // never hang a test
		}
		return next(ctx, cmd)
	}
}
func (h *inFlightHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// The lane's bound is checked from outside the gate: by a hook beneath it
// and by the sockets miniredis saw, so a gate that let a fourth command or
// socket through would fail this test.
func TestRequestLaneServesCommandsWithinItsSize(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, Request: LaneConfig{Size: 3, MaxWait: 30 * time.Second}})
	ctx := context.Background()
	require.NoError(t, p.Client().Set(ctx, "k", "v", 0).Err())
	hook := &inFlightHook{hold: make(chan struct{})}
	p.Client().AddHook(hook)

	// Twelve callers at once: three get through and are held there, nine
	// wait at the gate.
	const callers = 12
	errs := make(chan error, callers)
	for range callers {
		go func() {
			v, err := p.Client().Get(ctx, "k").Result()
			if err == nil && v != "v" {
				err = fmt.Errorf("GET k = %q", v)
			}
			errs <- err
		}()
	}
	testutil.Eventually(t, testutil.Wait, "every caller in flight or waiting", func() bool {
		return hook.now.Load()+int64(p.Stats().Request.Waiting) == callers
	})
	require.Equal(t, int64(3), hook.now.Load(), "commands past the gate")
	require.Equal(t, 9, p.Stats().Request.Waiting)
	require.LessOrEqual(t, m.CurrentConnectionCount(), 3, "sockets miniredis sees")
	close(hook.hold)
	for range callers {
		require.NoError(t, testutil.Recv(t, errs, "a caller's return"))
	}

	// Under load the bound holds too, and the sockets are reused.
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range 50 {
				v, err := p.Client().Get(ctx, "k").Result()
				if err == nil && v != "v" {
					err = fmt.Errorf("GET k = %q", v)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int64(3), hook.max.Load(), "never more than Size commands past the gate")
	require.LessOrEqual(t, m.TotalConnectionCount(), 3, "at most Size sockets were ever opened")
	s := p.Stats()
	require.LessOrEqual(t, s.Request.Open, 3)
	require.Equal(t, uint64(m.TotalConnectionCount()), s.Request.Dials, "the lane counts the dials miniredis saw")
	require.Zero(t, s.Request.DialErrors)
	require.Zero(t, s.Request.Timeouts)
	require.Zero(t, s.Request.Rejections)
	require.Zero(t, s.Request.InUse)
	require.Zero(t, s.Background.Open, "nothing used the background lane")
}

// holdLane takes n of the lane's connection slots, as n slow commands would.
func holdLane(l *lane, n int) (release func()) {
	for range n {
		l.gate.sem <- struct{}{}
	}
	return func() {
		for range n {
			l.gate.release()
		}
	}
}

func TestExhaustedLaneFailsWithinMaxWait(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, Request: LaneConfig{Size: 2, MaxWait: 30 * time.Millisecond}})
	release := holdLane(p.request, 2)
	defer release()

	before := m.CommandCount()
	start := time.Now()
	err := p.Client().Get(context.Background(), "k").Err()
	waited := time.Since(start)
	require.ErrorIs(t, err, ErrLaneExhausted)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the lane's max wait is a deadline")
	var le *LaneError
	require.ErrorAs(t, err, &le)
	require.Equal(t, LaneRequest, le.Lane)
	require.Equal(t, 2, le.Size)
	require.Equal(t, 2, le.InUse)
	require.Equal(t, 1, le.Waiting)
	require.Contains(t, err.Error(), "pool: request lane exhausted: size 2, in use 2, waiting 1")
	require.GreaterOrEqual(t, waited, 30*time.Millisecond)
	require.Equal(t, before, m.CommandCount(), "nothing reached Redis")

	s := p.Stats()
	require.Equal(t, uint64(1), s.Request.Waits)
	require.Equal(t, uint64(1), s.Request.Timeouts)
	require.GreaterOrEqual(t, s.Request.WaitP99, 30*time.Millisecond)
	require.True(t, s.Healthy, "a full lane says nothing about Redis")
}

func TestExhaustedLaneHonoursCallerContext(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, Request: LaneConfig{Size: 1, MaxWait: time.Minute}})
	release := holdLane(p.request, 1)
	defer release()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := p.Client().Get(ctx, "k").Err()
	require.ErrorIs(t, err, ErrLaneExhausted)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "the caller's context ended while waiting")

	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	err = p.Client().Get(cancelled, "k").Err()
	require.ErrorIs(t, err, context.Canceled)
}

func TestTooManyWaitersAreRejectedAtOnce(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, Request: LaneConfig{Size: 1, MaxWait: time.Minute, MaxWaiters: 2}})
	ctx := context.Background()
	require.NoError(t, p.Client().Set(ctx, "k", "v", 0).Err())
	release := holdLane(p.request, 1)

	var wg sync.WaitGroup
	results := make(chan error, 2)
	for range 2 {
		wg.Go(func() { results <- p.Client().Get(ctx, "k").Err() })
	}
	testutil.Eventually(t, testutil.Wait, "two waiters", func() bool { return p.Stats().Request.Waiting == 2 })

	start := time.Now()
	err := p.Client().Get(ctx, "k").Err()
	require.Less(t, time.Since(start), time.Second, "refused at once, not after waiting")
	require.ErrorIs(t, err, ErrLaneExhausted)
	require.NotErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "2 callers already waiting (max 2)")
	require.Equal(t, uint64(1), p.Stats().Request.Rejections)

	release()
	wg.Wait()
	close(results)
	for err := range results {
		require.NoError(t, err, "waiters are served when connections free up")
	}
}

func TestBlockingCommandsRefusedOutsideBlockingLane(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}})
	ctx := context.Background()
	before := m.CommandCount()

	err := p.Client().BLMove(ctx, "a", "b", "LEFT", "RIGHT", time.Second).Err()
	require.ErrorIs(t, err, ErrBlockingCommand)
	require.ErrorContains(t, err, "BLMOVE on the request lane")
	require.ErrorIs(t, p.Background().BLPop(ctx, time.Second, "a").Err(), ErrBlockingCommand)
	require.ErrorIs(t, p.Client().XRead(ctx, &redis.XReadArgs{Streams: []string{"s", "0"}, Block: time.Second}).Err(), ErrBlockingCommand)
	require.ErrorIs(t, p.Client().Do(ctx, "wait", 1, 0).Err(), ErrBlockingCommand, "WAIT 0 waits for ever")
	require.ErrorIs(t, p.Client().Do(ctx, "WAIT", "1", "0").Err(), ErrBlockingCommand)
	require.ErrorIs(t, p.Client().Do(ctx, "WAITAOF", 1, 0, 0).Err(), ErrBlockingCommand)

	pipe := p.Client().Pipeline()
	pipe.Get(ctx, "x")
	pipe.BRPop(ctx, time.Second, "a")
	_, err = pipe.Exec(ctx)
	require.ErrorIs(t, err, ErrBlockingCommand)
	require.Equal(t, before, m.CommandCount(), "nothing reached Redis")

	// Non-blocking forms pass.
	require.ErrorIs(t, p.Client().XRead(ctx, &redis.XReadArgs{Streams: []string{"s", "0"}, Count: 1, Block: -1}).Err(), redis.Nil)
}

func TestReservationsAreABudget(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, Blocking: BlockingConfig{Size: 3}})

	a, err := p.ReserveBlocking("queue:chat", 1)
	require.NoError(t, err)
	b, err := p.ReserveBlocking("queue:embeddings", 2)
	require.NoError(t, err)

	_, err = p.ReserveBlocking("queue:webhooks", 1)
	require.ErrorIs(t, err, ErrOverBudget)
	require.ErrorContains(t, err, `"queue:webhooks" asks for 1 connection(s) but the blocking lane has 0 of 3 left (held by queue:chat=1, queue:embeddings=2); raise Config.Blocking.Size`)

	s := p.Stats().Blocking
	require.Equal(t, 3, s.Reserved)
	require.Equal(t, []ReservationStats{{Owner: "queue:chat", Size: 1}, {Owner: "queue:embeddings", Size: 2}}, s.Reservations)

	require.NoError(t, b.Release())
	require.NoError(t, b.Release(), "idempotent")
	c, err := p.ReserveBlocking("queue:webhooks", 2)
	require.NoError(t, err, "released connections return to the lane")
	require.Equal(t, 2, c.Size())
	require.Equal(t, "queue:webhooks", c.Owner())
	require.NoError(t, a.Client().Ping(context.Background()).Err())

	_, err = p.ReserveBlocking("", 1)
	require.ErrorContains(t, err, "owner must not be empty")
	_, err = p.ReserveBlocking("x", 0)
	require.ErrorContains(t, err, `ReserveBlocking("x"): n must be at least 1, got 0`)

	none := newPool(t, Config{Addrs: []string{m.Addr()}, Blocking: BlockingConfig{NoBlocking: true}})
	_, err = none.ReserveBlocking("queue:chat", 1)
	require.ErrorIs(t, err, ErrOverBudget)
}

func TestReservationLimitsItsOwnConcurrency(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}})
	r, err := p.ReserveBlocking("fetcher", 1)
	require.NoError(t, err)
	r.gate.sem <- struct{}{} // one command in flight
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = r.Client().Ping(ctx).Err()
	require.ErrorIs(t, err, ErrLaneExhausted)
	require.ErrorContains(t, err, `pool: blocking lane exhausted (reservation "fetcher"): size 1, in use 1`)
	r.gate.release()
	require.NoError(t, r.Client().Ping(context.Background()).Err())
}

func TestSubscriptionHoldsAReservedConnection(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}})
	ctx := context.Background()
	r, err := p.ReserveBlocking("cache:users invalidation", 1)
	require.NoError(t, err)

	_, err = r.Subscribe(ctx)
	require.ErrorContains(t, err, "Subscribe needs at least one channel")

	sub, err := r.Subscribe(ctx, "inval")
	require.NoError(t, err)
	s := p.Stats().Blocking
	require.Equal(t, 1, s.InUse)
	require.Equal(t, 1, s.Open, "the subscription's socket is counted in the lane")

	require.NoError(t, p.Client().Publish(ctx, "inval", "k1").Err())
	msg, err := sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "k1", msg.Payload)

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = r.Subscribe(short, "other")
	require.ErrorIs(t, err, ErrLaneExhausted, "the reservation's only connection is taken")

	require.NoError(t, sub.Close())
	require.NoError(t, sub.Close(), "idempotent")
	require.Zero(t, p.Stats().Blocking.InUse)
	testutil.Eventually(t, testutil.Wait, "subscription socket closed", func() bool { return p.Stats().Blocking.Open == 0 })

	require.NoError(t, r.Release())
	_, err = r.Subscribe(ctx, "inval")
	require.ErrorIs(t, err, ErrClosed)
}

func TestRedisDownFailsFastAndRecoversByProbe(t *testing.T) {
	m := redistest.Mini(t)
	clock := testutil.NewClock()
	p := newPool(t, Config{Addrs: []string{m.Addr()}, FailureThreshold: 2, ProbeInterval: time.Second, Now: clock.Now})
	ctx := context.Background()
	require.NoError(t, p.Client().Set(ctx, "k", "v", 0).Err())
	require.NoError(t, p.Admit())

	m.Close()
	for range 2 {
		err := p.Client().Get(ctx, "k").Err()
		require.Error(t, err)
		require.NotErrorIs(t, err, ErrUnavailable, "the failures that mark Redis down are real")
	}
	require.False(t, p.Healthy())
	h := p.Health()
	require.False(t, h.Up)
	require.Error(t, h.LastError)
	require.Equal(t, clock.Now(), h.Since)

	dialsBefore := p.Stats().Request.Dials
	start := time.Now()
	for range 1000 {
		err := p.Client().Get(ctx, "k").Err()
		require.ErrorIs(t, err, ErrUnavailable)
	}
	perCall := time.Since(start) / 1000
	t.Logf("fail-fast call while down: %s", perCall)
	require.Equal(t, dialsBefore, p.Stats().Request.Dials, "no dial while failing fast")
	require.ErrorIs(t, p.Admit(), ErrUnavailable)

	// After the probe interval one caller is let through; it fails, so Redis
	// stays down and the next probe is one interval later.
	clock.Advance(time.Second)
	require.Error(t, p.Client().Get(ctx, "k").Err())
	require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), ErrUnavailable)
	require.Equal(t, uint64(1), p.Health().Probes)

	require.NoError(t, m.Restart())
	clock.Advance(time.Second)
	require.NoError(t, p.Client().Get(ctx, "k").Err(), "the probe finds Redis back")
	require.True(t, p.Healthy())
	require.NoError(t, p.Admit())
	require.NoError(t, p.Client().Get(ctx, "k").Err())
}

func TestRedisErrorRepliesDoNotMarkDown(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, FailureThreshold: 1})
	ctx := context.Background()
	require.NoError(t, p.Client().LPush(ctx, "list", "x").Err())
	for range 3 {
		require.Error(t, p.Client().Get(ctx, "list").Err(), "WRONGTYPE")
	}
	require.True(t, p.Healthy())
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	done, cancel := context.WithCancel(ctx)
	cancel()
	cases := []struct {
		err  error
		ctx  context.Context
		want outcome
	}{
		{nil, ctx, outcomeUp},
		{redis.Nil, ctx, outcomeUp},
		{redisErr("WRONGTYPE Operation against a key"), ctx, outcomeUp},
		{redisErr("LOADING Redis is loading the dataset in memory"), ctx, outcomeDown},
		{redisErr("CLUSTERDOWN The cluster is down"), ctx, outcomeDown},
		{fmt.Errorf("x: %w", &LaneError{}), ctx, outcomeNeutral},
		{ErrUnavailable, ctx, outcomeNeutral},
		{redis.ErrClosed, ctx, outcomeNeutral},
		{context.Canceled, done, outcomeNeutral},
		{errors.New("read tcp: connection reset by peer: EOF"), ctx, outcomeNeutral},
		{fmt.Errorf("wrapped: %w", errEOF), ctx, outcomeDown},
	}
	for _, c := range cases {
		require.Equal(t, c.want, classify(c.ctx, c.err), "%v", c.err)
	}
}

type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

var errEOF = fmt.Errorf("conn: %w", io.EOF)

func TestCloseIsIdempotentAndStopsEverything(t *testing.T) {
	m := redistest.Mini(t)
	p, err := New(Config{Addrs: []string{m.Addr()}})
	require.NoError(t, err)
	r, err := p.ReserveBlocking("x", 1)
	require.NoError(t, err)
	require.NoError(t, r.Client().Ping(context.Background()).Err())
	require.NoError(t, p.Client().Ping(context.Background()).Err())

	require.NoError(t, p.Close())
	require.NoError(t, p.Close())
	require.ErrorIs(t, p.Client().Ping(context.Background()).Err(), redis.ErrClosed)
	_, err = p.ReserveBlocking("y", 1)
	require.ErrorIs(t, err, ErrClosed)
	require.Empty(t, p.Stats().Blocking.Reservations)
	testutil.Eventually(t, testutil.Wait, "sockets closed", func() bool { return p.Stats().Open == 0 })
}

func TestPingReportsErrors(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}})
	require.NoError(t, p.Ping(context.Background()))
	m.Close()
	err := p.Ping(context.Background())
	require.ErrorContains(t, err, "pool: ping:")
}

// --- real server -----------------------------------------------------------

func TestBlockingReservationOnRealServer(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{URL: srv.URL(), Blocking: BlockingConfig{Size: 1}})
	ctx := context.Background()
	r, err := p.ReserveBlocking("fetcher", 1)
	require.NoError(t, err)

	start := time.Now()
	err = r.Client().BLMove(ctx, "ready", "processing", "RIGHT", "LEFT", 100*time.Millisecond).Err()
	require.ErrorIs(t, err, redis.Nil, "a finite block timeout returns nil")
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)

	require.NoError(t, p.Client().LPush(ctx, "ready", "job").Err())
	v, err := r.Client().BLMove(ctx, "ready", "processing", "RIGHT", "LEFT", time.Second).Result()
	require.NoError(t, err)
	require.Equal(t, "job", v)

	clients, err := srv.Clients(ctx)
	require.NoError(t, err)
	joined := strings.Join(clients, "\n")
	require.Contains(t, joined, "name=bounded-blocking-fetcher")
	require.Contains(t, joined, "name=bounded-request")
}

// TestStarvationShapeThroughPool reproduces the post-mortem's shape: blocking
// consumers that would hold every connection of a shared pool, next to 20
// request loops. Through the pool the blocking work has its own lane, so the
// request lane sees no timeouts and no rejections.
func TestStarvationShapeThroughPool(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{URL: srv.URL(), Request: LaneConfig{Size: 20}, Blocking: BlockingConfig{Size: 10}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, p.Client().Set(ctx, "k", "v", 0).Err())

	res, err := p.ReserveBlocking("30 blocking consumers", 10)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			key := fmt.Sprintf("empty:%d", i)
			for ctx.Err() == nil {
				_ = res.Client().BLMove(ctx, key, key+":p", "RIGHT", "LEFT", time.Second).Err()
			}
		})
	}

	var gets atomic.Int64
	var getErrs atomic.Int64
	deadline := time.Now().Add(time.Second)
	var getters sync.WaitGroup
	for range 20 {
		getters.Go(func() {
			for time.Now().Before(deadline) {
				if err := p.Client().Get(ctx, "k").Err(); err != nil {
					getErrs.Add(1)
					t.Errorf("GET: %v", err)
					return
				}
				gets.Add(1)
			}
		})
	}
	getters.Wait()
	s := p.Stats()
	cancel()
	wg.Wait()

	t.Logf("GETs in 1s next to 30 blocking consumers: %d (p50 wait %s, p99 wait %s)", gets.Load(), s.Request.WaitP50, s.Request.WaitP99)
	require.Zero(t, getErrs.Load())
	require.Zero(t, s.Request.Timeouts)
	require.Zero(t, s.Request.Rejections)
	require.LessOrEqual(t, s.Request.Open, 20)
	require.LessOrEqual(t, s.Blocking.Open, 10)
	// A starved client manages ~20 GETs a second (each waits out a 1s block);
	// a lane of its own serves thousands. The bound is loose on purpose: it
	// is a count, not a timing target.
	require.Greater(t, gets.Load(), int64(1000))
}

// A caller that was granted the probe by AdmitContext sends it through the
// request lane, whose hook also checks health, and no other caller's
// command can spend it (issue 13: with the old Admit, a ticket another
// caller's command took first left the granted caller with ErrUnavailable).
func TestAdmittedProbeBelongsToItsCaller(t *testing.T) {
	m, p, clock := downOnAManualClock(t)
	ctx := context.Background()
	require.False(t, p.Healthy())
	require.ErrorIs(t, p.Admit(), ErrUnavailable, "no probe due yet")
	_, err := p.AdmitContext(ctx)
	require.ErrorIs(t, err, ErrUnavailable)

	clock.Advance(time.Second)
	require.NoError(t, p.Admit(), "a probe is due; Admit claims nothing")
	require.NoError(t, p.Admit())
	actx, err := p.AdmitContext(ctx)
	require.NoError(t, err, "probe granted to A")
	_, err = p.AdmitContext(ctx)
	require.ErrorIs(t, err, ErrUnavailable, "one probe per interval")
	require.ErrorIs(t, p.Admit(), ErrUnavailable, "and none due any more")
	require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), ErrUnavailable, "B cannot spend A's probe")
	err = p.Client().Get(actx, "k").Err()
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrUnavailable, "A's probe is sent (and finds Redis still down)")
	require.ErrorIs(t, p.Client().Get(actx, "k").Err(), ErrUnavailable, "a probe is spent once")

	require.NoError(t, m.Restart())
	clock.Advance(time.Second)
	actx, err = p.AdmitContext(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, p.Client().Get(actx, "k").Err(), redis.Nil, "the granted probe reaches Redis")
	require.True(t, p.Healthy())
	require.Equal(t, uint64(2), p.Health().Probes)

	q := newPool(t, Config{Addrs: []string{m.Addr()}})
	qctx, err := q.AdmitContext(ctx)
	require.NoError(t, err)
	require.Equal(t, ctx, qctx, "nothing to carry while Redis is up")
}

// With Admit, which grants nothing, the probe is whichever command claims
// it first.
func TestAdmitLetsTheFirstCommandProbe(t *testing.T) {
	m, p, clock := downOnAManualClock(t)
	ctx := context.Background()
	require.NoError(t, m.Restart())
	clock.Advance(time.Second)
	require.NoError(t, p.Admit())
	require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), redis.Nil, "the first command is the probe")
	require.True(t, p.Healthy())
	require.Equal(t, uint64(1), p.Health().Probes)
}

// go-redis checks an idle connection for EOF before it reuses it, through
// syscall.Conn; the lane's socket counting must not hide that, or every
// connection that went stale in a Redis restart fails one command.
func TestStaleConnectionsAreDetectedAfterRestart(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, Request: LaneConfig{Size: 4}})
	ctx := context.Background()
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- p.Client().Ping(ctx).Err() }()
	}
	for range 4 {
		require.NoError(t, testutil.Recv(t, errs, "a PING's return"))
	}
	srv.Restart()
	for i := range 8 {
		require.NoError(t, p.Client().Ping(ctx).Err(), "ping %d after the restart", i)
	}
	require.True(t, p.Healthy())
}

func TestURLOptions(t *testing.T) {
	c, err := Config{URL: "redis://10.0.0.1:6390/0?dial_timeout=7s&read_timeout=4s&client_name=api"}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, 7*time.Second, c.DialTimeout)
	require.Equal(t, 4*time.Second, c.ReadTimeout)
	require.Equal(t, "api", c.ClientName)

	c, err = Config{URL: "redis://10.0.0.1:6390?dial_timeout=7s", DialTimeout: time.Second}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, time.Second, c.DialTimeout, "a field set in Config wins")

	_, err = New(Config{URL: "redis://10.0.0.1:6390?pool_size=100"})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "pool: invalid config: Config.URL sets pool_size, which the pool decides per lane")
	_, err = New(Config{URL: "redis://10.0.0.1:6390?max_retries=3"})
	require.ErrorContains(t, err, "max_retries")
	_, err = New(Config{URL: "unix:///tmp/redis.sock"})
	require.ErrorContains(t, err, "unix sockets are not supported")
}

// WAIT with a timeout is bounded: in a pipeline after a write, on the
// write's connection, it says how many replicas have the write.
func TestWaitWithTimeoutAfterAWrite(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{Args: []string{"--repl-diskless-sync-delay", "0"}})
	replica := redistest.ServerWith(t, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", strings.TrimPrefix(srv.Addr(), "127.0.0.1:")}})
	testutil.Eventually(t, testutil.Wait, "the replica in sync", func() bool {
		info, err := replica.Do(context.Background(), "INFO", "replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	// WAIT returns as soon as the replica has the write: a long timeout
	// costs nothing, and 1s was missed on a loaded 2-core CI machine.
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, ReadTimeout: 15 * time.Second})
	ctx := context.Background()
	pipe := p.Client().Pipeline()
	pipe.LPush(ctx, "ready", "job")
	wait := pipe.Do(ctx, "WAIT", 1, 10000)
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), wait.Val(), "the replica has the write")
	require.NoError(t, p.Client().Do(ctx, "WAIT", "0", "100").Err())

	require.NoError(t, replica.Stop())
	pipe = p.Client().Pipeline()
	pipe.LPush(ctx, "ready", "job")
	wait = pipe.Do(ctx, "WAIT", 1, 50)
	_, err = pipe.Exec(ctx)
	require.NoError(t, err)
	require.Zero(t, wait.Val(), "no replica has it: WAIT says so after its timeout")
}

// downOnAManualClock returns a pool on miniredis whose clock moves only by
// clock.Advance, with Redis stopped and the pool marked down by one failed
// command (FailureThreshold 1), a probe due every second of that clock.
func downOnAManualClock(t *testing.T) (*miniredis.Miniredis, *Pool, *testutil.Clock) {
	t.Helper()
	m := redistest.Mini(t)
	clock := testutil.NewClock()
	p := newPool(t, Config{Addrs: []string{m.Addr()}, FailureThreshold: 1, ProbeInterval: time.Second, Now: clock.Now})
	m.Close()
	require.Error(t, p.Client().Get(context.Background(), "k").Err())
	return m, p, clock
}
