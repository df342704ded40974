package pool_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

func Example() {
	m := miniredis.NewMiniRedis() // any Redis; an embedded one keeps the example self-contained
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()

	p, err := pool.New(pool.Config{
		Addrs:    []string{m.Addr()},
		Request:  pool.LaneConfig{Size: 20},
		Blocking: pool.BlockingConfig{Size: 2},
	})
	if err != nil {
		panic(err)
	}
	g := lifecycle.New()
	_ = g.OnClose("redis pool", func(context.Context) error { return p.Close() }) // registered first, closed last

	ctx := context.Background()
	_ = p.Client().Set(ctx, "greeting", "hello", 0).Err()
	v, _ := p.Client().Get(ctx, "greeting").Result()
	fmt.Println("request lane:", v)

	// Blocking consumers reserve their connections when they are built...
	_, _ = p.ReserveBlocking("queue:chat", 1)
	_, _ = p.ReserveBlocking("cache:agents invalidation", 1)
	// ...so a budget that cannot work fails now, not under load.
	_, err = p.ReserveBlocking("queue:webhooks", 1)
	fmt.Println(errors.Is(err, pool.ErrOverBudget))
	fmt.Println(err)

	// Blocking commands never take a request-lane connection.
	err = p.Client().BLPop(ctx, 0, "jobs").Err()
	fmt.Println(errors.Is(err, pool.ErrBlockingCommand))

	s := p.Stats()
	fmt.Printf("lanes: request %d, background %d, blocking %d (reserved %d)\n",
		s.Request.Size, s.Background.Size, s.Blocking.Size, s.Blocking.Reserved)

	fmt.Println("close:", g.Close(ctx))
	// Output:
	// request lane: hello
	// true
	// pool: blocking lane over budget: "queue:webhooks" asks for 1 connection(s) but the blocking lane has 0 of 2 left (held by queue:chat=1, cache:agents invalidation=1); raise Config.Blocking.Size
	// true
	// lanes: request 20, background 4, blocking 2 (reserved 2)
	// close: <nil>
}

// Admit lets a component choose its fallback in microseconds when Redis is
// down, instead of paying a dial timeout per call.
func ExamplePool_Admit() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}, FailureThreshold: 1})
	defer p.Close()
	ctx := context.Background()

	fmt.Println("up:", p.Admit() == nil)
	m.Close()                          // Redis goes away
	_ = p.Client().Get(ctx, "k").Err() // a real failure marks it down
	err := p.Admit()
	fmt.Println("down:", errors.Is(err, pool.ErrUnavailable), p.Healthy())
	// Output:
	// up: true
	// down: true false
}
