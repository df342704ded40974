package grpc_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	bgrpc "github.com/bounded-go/bounded/contrib/grpc"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/ratelimit"
)

// Two calls a minute per API key; the third is ResourceExhausted, with the
// wait in its trailer. In a server: grpc.NewServer(grpc.ChainUnaryInterceptor(unary)).
func ExampleUnaryServerInterceptor() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	api, _ := ratelimit.New(p, "grpc", ratelimit.Config{Rate: 2, Period: time.Minute, Now: func() time.Time { return now }})
	unary, err := bgrpc.UnaryServerInterceptor(api, bgrpc.WithKey(bgrpc.KeyFromMetadata("x-api-key")))
	if err != nil {
		panic(err)
	}

	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-api-key", "key-1"))
	info := &grpc.UnaryServerInfo{FullMethod: "/shop.Orders/Create"}
	handler := func(context.Context, any) (any, error) { return "created", nil }
	for range 3 {
		resp, err := unary(ctx, nil, info, handler)
		if err != nil {
			fmt.Println(status.Code(err), status.Convert(err).Message())
			continue
		}
		fmt.Println(resp)
	}
	// Output:
	// created
	// created
	// ResourceExhausted rate limit exceeded: retry after 30s
}
