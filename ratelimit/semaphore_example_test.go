package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/ratelimit"
)

// At most two reports per tenant run at once across the fleet. A third
// caller waits for a slot; TryAcquire does not wait. Closing the group stops
// the Semaphore's renewal timer, wait timer and subscriber.
func ExampleSemaphore() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	if err != nil {
		panic(err)
	}
	defer p.Close() // last: after the group

	reports, err := ratelimit.NewSemaphore(p, "reports", ratelimit.SemaphoreConfig{Limit: 2, LeaseTTL: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	g := lifecycle.New()
	if err := reports.Start(g); err != nil {
		panic(err)
	}
	ctx := context.Background()
	first, _ := reports.Acquire(ctx, "tenant:7")
	second, _ := reports.Acquire(ctx, "tenant:7")
	_, err = reports.TryAcquire(ctx, "tenant:7")
	fmt.Println("third, without waiting:", errors.Is(err, ratelimit.ErrSemaphoreFull))

	got := make(chan error)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		release, err := reports.Acquire(wctx, "tenant:7") // waits for a release
		if err == nil {
			release()
		}
		got <- err
	}()
	first() // wakes the waiter
	fmt.Println("third, waiting:", <-got)
	second()
	second() // a second call does nothing

	if err := g.Close(ctx); err != nil {
		panic(err)
	}
	_, err = reports.Acquire(ctx, "tenant:7")
	fmt.Println("after close:", errors.Is(err, ratelimit.ErrSemaphoreClosed))
	// Output:
	// third, without waiting: true
	// third, waiting: <nil>
	// after close: true
}
