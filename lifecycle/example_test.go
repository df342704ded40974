package lifecycle_test

import (
	"context"
	"errors"
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

// Run is a service's main: it returns once a signal arrives (here the
// context is cancelled at once, standing in for SIGTERM) or a task asks for
// shutdown, after closing the group with Config.ShutdownTimeout as deadline.
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	return g.Run(ctx)
func ExampleGroup_Run() {
	g := lifecycle.NewWithConfig(lifecycle.Config{ShutdownTimeout: 5 * time.Second})
	_ = g.OnClose("redis pool", func(ctx context.Context) error {
		fmt.Println("closed: redis pool")
		return nil
	})
	_ = g.Go("http server", func(ctx context.Context) error {
		<-ctx.Done()
		fmt.Println("stopped: http server")
		return nil
	})

	ctx, stop := context.WithCancel(context.Background())
	stop() // the signal
	fmt.Println("run:", g.Run(ctx))
	// Output:
	// stopped: http server
	// closed: redis pool
	// run: <nil>
}

// A task that finds the service cannot go on asks for shutdown: Shutdown
// returns at once (Close would wait for the very task calling it), Run
// closes the group, and the cause is its result.
func ExampleGroup_Shutdown() {
	g := lifecycle.New()
	_ = g.OnClose("redis pool", func(ctx context.Context) error {
		fmt.Println("closed: redis pool")
		return nil
	})
	_ = g.Go("config watcher", func(ctx context.Context) error {
		g.Shutdown(errors.New("config deleted"))
		<-ctx.Done()
		fmt.Println("stopped: config watcher")
		return nil
	})
	fmt.Println("run:", g.Run(context.Background()))
	// Output:
	// stopped: config watcher
	// closed: redis pool
	// run: lifecycle: shutdown requested: config deleted
}

// With StopOnError the first task that fails stops the group, as in
// oklog/run: the other tasks are cancelled and the failure is the result.
func ExampleConfig_stopOnError() {
	g := lifecycle.NewWithConfig(lifecycle.Config{StopOnError: true})
	_ = g.Go("consumer", func(ctx context.Context) error {
		<-ctx.Done()
		fmt.Println("stopped: consumer")
		return nil
	})
	_ = g.Go("listener", func(ctx context.Context) error {
		return errors.New("address already in use")
	})
	fmt.Println("run:", g.Run(context.Background()))
	// Output:
	// stopped: consumer
	// run: lifecycle: task "listener": address already in use
}
