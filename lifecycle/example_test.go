package lifecycle_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bounded-go/bounded/lifecycle"
)

// A service builds one group, hands it to every component, and closes it once
// with a deadline. The output shows the teardown order: tasks stop first, then
// closers run in reverse order of registration.
func Example() {
	g := lifecycle.New()

	// Resources opened first are closed last.
	_ = g.OnClose("redis pool", func(ctx context.Context) error {
		fmt.Println("closed: redis pool")
		return nil
	})
	_ = g.OnClose("http server", func(ctx context.Context) error {
		fmt.Println("closed: http server")
		return nil
	})

	ready := make(chan struct{})
	_ = g.Go("queue fetcher", func(ctx context.Context) error {
		close(ready)
		<-ctx.Done() // runs until the group closes
		fmt.Println("stopped: queue fetcher")
		return nil
	})
	<-ready

	for _, t := range g.Tasks() {
		fmt.Println("owned:", t)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Close(ctx); err != nil {
		fmt.Println("close:", err)
	}
	fmt.Println("tasks left:", len(g.Tasks()))

	// Output:
	// owned: redis pool (onclose)
	// owned: http server (onclose)
	// owned: queue fetcher (go)
	// stopped: queue fetcher
	// closed: http server
	// closed: redis pool
	// tasks left: 0
}

// Every runs a maintenance function on one ticker; Close stops it.
func ExampleGroup_Every() {
	g := lifecycle.New()
	beats := make(chan struct{}, 3)
	_ = g.Every("heartbeat", 10*time.Millisecond, func(ctx context.Context) {
		select {
		case beats <- struct{}{}:
		default:
		}
	})
	for range 3 {
		<-beats
	}
	fmt.Println("three heartbeats")
	fmt.Println(g.Close(context.Background()))
	// Output:
	// three heartbeats
	// <nil>
}
