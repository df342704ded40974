package grpc_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	bgrpc "github.com/bounded-go/bounded/contrib/grpc"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/ratelimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup is a gRPC server in process, over bufconn, serving the standard
// health service (Check is unary, Watch a server stream) behind the
// interceptors, and a client connected to it.
type setup struct {
	l      *ratelimit.Limiter
	clk    *testutil.Clock
	client healthpb.HealthClient
}

// newSetup limits at 2 per 10 s, keyed by the "x-api-key" metadata unless
// opts say otherwise, on miniredis with a fixed clock. Everything stops in
// t.Cleanup.
func newSetup(t *testing.T, policy ratelimit.Policy, opts ...bgrpc.Option) *setup {
	m := redistest.Mini(t)
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	s := &setup{clk: testutil.NewClock()}
	s.l, err = ratelimit.New(p, "grpc", ratelimit.Config{Rate: 2, Period: 10 * time.Second, OnRedisError: policy, Now: s.clk.Now})
	require.NoError(t, err)
	if len(opts) == 0 {
		opts = []bgrpc.Option{bgrpc.WithKey(bgrpc.KeyFromMetadata("x-api-key"))}
	}
	unary, err := bgrpc.UnaryServerInterceptor(s.l, opts...)
	require.NoError(t, err)
	stream, err := bgrpc.StreamServerInterceptor(s.l, opts...)
	require.NoError(t, err)

	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, conn.Close())
		srv.Stop()
		require.NoError(t, testutil.Recv(t, served, "Serve to return"))
	})
	s.client = healthpb.NewHealthClient(conn)
	return s
}

func withKey(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "x-api-key", key)
}

// check makes one unary call and returns its header, trailer and error.
func (s *setup) check(ctx context.Context) (metadata.MD, metadata.MD, error) {
	var header, trailer metadata.MD
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := s.client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header), grpc.Trailer(&trailer))
	return header, trailer, err
}

// requireDenied checks a denial: ResourceExhausted with the RetryInfo
// detail and the retry-after trailer.
func requireDenied(t *testing.T, err error, trailer metadata.MD, retry time.Duration, retrySeconds string) {
	t.Helper()
	st, ok := status.FromError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), "%v", err)
	var info *errdetails.RetryInfo
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			info = ri
		}
	}
	require.NotNil(t, info, "RetryInfo detail")
	require.Equal(t, retry, info.RetryDelay.AsDuration())
	require.Equal(t, []string{retrySeconds}, trailer.Get("retry-after"))
}

func TestUnary(t *testing.T) {
	s := newSetup(t, ratelimit.FailLocal)
	for i, remaining := range []string{"1", "0"} {
		header, _, err := s.check(withKey("ann"))
		require.NoError(t, err, "call %d", i)
		require.Equal(t, []string{"2"}, header.Get("ratelimit-limit"))
		require.Equal(t, []string{remaining}, header.Get("ratelimit-remaining"))
	}
	_, trailer, err := s.check(withKey("ann"))
	requireDenied(t, err, trailer, 5*time.Second, "5")
	require.Equal(t, []string{"0"}, trailer.Get("ratelimit-remaining"))
	require.Equal(t, []string{"10"}, trailer.Get("ratelimit-reset"))

	_, _, err = s.check(withKey("bob"))
	require.NoError(t, err, "keys are limited apart")

	// No key: exempt, no metadata.
	for range 5 {
		header, _, err := s.check(context.Background())
		require.NoError(t, err)
		require.Empty(t, header.Get("ratelimit-limit"))
	}
	s.clk.Advance(5 * time.Second)
	_, _, err = s.check(withKey("ann"))
	require.NoError(t, err, "admitted after the RetryAfter")
}

func TestStream(t *testing.T) {
	s := newSetup(t, ratelimit.FailLocal)
	watch := func(key string) (healthpb.HealthCheckResponse_ServingStatus, metadata.MD, error) {
		ctx, cancel := context.WithTimeout(withKey(key), 10*time.Second)
		defer cancel()
		w, err := s.client.Watch(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		resp, err := w.Recv()
		if err != nil {
			return 0, w.Trailer(), err
		}
		header, err := w.Header()
		require.NoError(t, err)
		return resp.Status, header, nil
	}
	for range 2 {
		st, header, err := watch("ann")
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, st)
		require.Equal(t, []string{"2"}, header.Get("ratelimit-limit"))
	}
	_, trailer, err := watch("ann")
	requireDenied(t, err, trailer, 5*time.Second, "5")
	_, _, err = watch("bob")
	require.NoError(t, err)
}

// TestOptions: WithSkip exempts before the key function, PerMethod and
// KeyFromPeer key by method and address, WithLimits gives per-call limits
// and a bad one fails the call with Internal.
func TestOptions(t *testing.T) {
	keyCalls := 0
	s := newSetup(t, ratelimit.FailLocal,
		bgrpc.WithKey(bgrpc.PerMethod(func(ctx context.Context, m string) string {
			keyCalls++
			return bgrpc.KeyFromPeer()(ctx, m)
		})),
		bgrpc.WithSkip(func(ctx context.Context, _ string) bool {
			return len(metadata.ValueFromIncomingContext(ctx, "x-internal")) > 0
		}),
		bgrpc.WithLimits(func(ctx context.Context, _ string) []ratelimit.Limit {
			if len(metadata.ValueFromIncomingContext(ctx, "x-bad")) > 0 {
				return []ratelimit.Limit{{Rate: -1}}
			}
			return []ratelimit.Limit{ratelimit.PerMinute(1), ratelimit.PerHour(10)}
		}))
	internal := metadata.AppendToOutgoingContext(context.Background(), "x-internal", "1")
	for range 3 {
		header, _, err := s.check(internal)
		require.NoError(t, err)
		require.Empty(t, header.Get("ratelimit-limit"))
	}
	require.Zero(t, keyCalls, "skipped before the key function")

	header, _, err := s.check(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"1"}, header.Get("ratelimit-limit"), "the minute's window decides")
	_, trailer, err := s.check(context.Background())
	requireDenied(t, err, trailer, time.Minute, "60")
	require.Equal(t, 2, keyCalls)

	// Another method has its own limit: Watch on the same peer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := s.client.Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = w.Recv()
	require.NoError(t, err)

	_, _, err = s.check(metadata.AppendToOutgoingContext(context.Background(), "x-bad", "1"))
	require.Equal(t, codes.Internal, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "limits[0].Rate must be positive")
}

// TestRedisDown: the Limiter's policy answers (here FailClosed denies).
func TestRedisDown(t *testing.T) {
	srv := redistest.Server(t)
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	l, err := ratelimit.New(p, "down", ratelimit.Config{Rate: 1, OnRedisError: ratelimit.FailClosed})
	require.NoError(t, err)
	unary, err := bgrpc.UnaryServerInterceptor(l, bgrpc.WithKey(bgrpc.KeyFromMetadata("x-api-key")))
	require.NoError(t, err)
	require.NoError(t, srv.Stop())
	called := false
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-api-key", "ann"))
	_, err = unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/x.Y/Z"}, func(context.Context, any) (any, error) {
		called = true
		return nil, nil
	})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.False(t, called)
}

// TestContextEnded: a call whose context has ended gets its code, and the
// handler is not called.
func TestContextEnded(t *testing.T) {
	m := redistest.Mini(t)
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	l, err := ratelimit.New(p, "gone", ratelimit.Config{Rate: 1})
	require.NoError(t, err)
	unary, err := bgrpc.UnaryServerInterceptor(l, bgrpc.WithKey(bgrpc.KeyFromMetadata("x-api-key")))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-api-key", "ann")))
	cancel()
	_, err = unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/x.Y/Z"}, func(context.Context, any) (any, error) {
		t.Error("handler called")
		return nil, nil
	})
	require.Equal(t, codes.Canceled, status.Code(err), "%v", err)
}

func TestBadOptions(t *testing.T) {
	m := redistest.Mini(t)
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	l, err := ratelimit.New(p, "opts", ratelimit.Config{Rate: 1})
	require.NoError(t, err)
	for _, c := range []struct {
		l    *ratelimit.Limiter
		opts []bgrpc.Option
		want []string
	}{
		{l, nil, []string{"WithKey is required"}},
		{l, []bgrpc.Option{bgrpc.WithKey(nil)}, []string{"WithKey: nil key function"}},
		{nil, []bgrpc.Option{bgrpc.WithKey(bgrpc.KeyFromPeer())}, []string{"nil Limiter"}},
		{l, []bgrpc.Option{bgrpc.WithKey(bgrpc.KeyFromPeer()), bgrpc.WithSkip(nil), bgrpc.WithLimits(nil)},
			[]string{"WithSkip: nil predicate", "WithLimits: nil limits function"}},
	} {
		u, err := bgrpc.UnaryServerInterceptor(c.l, c.opts...)
		require.Nil(t, u)
		require.True(t, errors.Is(err, bgrpc.ErrInvalidConfig), "%v", err)
		s, err2 := bgrpc.StreamServerInterceptor(c.l, c.opts...)
		require.Nil(t, s)
		require.Equal(t, err.Error(), err2.Error())
		for _, w := range c.want {
			require.ErrorContains(t, err, w)
		}
	}
}

// TestErrorsDoNotEchoTheKey: the key is often a credential (an API key from
// metadata); a failed decision must not send it back in the status
// message. A context that ended gets its own code, a limiter that cannot
// answer (its pool closed) Unavailable.
func TestErrorsDoNotEchoTheKey(t *testing.T) {
	const secret = "sk_live_do_not_echo"
	for _, c := range []struct {
		name   string
		cancel bool
		want   codes.Code
	}{
		{"context ended", true, codes.Canceled},
		{"pool closed", false, codes.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := redistest.Mini(t)
			p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
			require.NoError(t, err)
			l, err := ratelimit.New(p, "echo", ratelimit.Config{Rate: 1})
			require.NoError(t, err)
			unary, err := bgrpc.UnaryServerInterceptor(l, bgrpc.WithKey(bgrpc.KeyFromMetadata("x-api-key")))
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-api-key", secret)))
			defer cancel()
			if c.cancel {
				cancel()
				t.Cleanup(func() { require.NoError(t, p.Close()) })
			} else {
				require.NoError(t, p.Close())
			}
			_, err = unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/x.Y/Z"}, func(context.Context, any) (any, error) {
				t.Error("handler called")
				return nil, nil
			})
			require.Equal(t, c.want, status.Code(err), "%v", err)
			require.NotContains(t, err.Error(), secret)
		})
	}
}
