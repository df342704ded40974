package memwatch_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/memwatch"
)

// Alerts are raised once and cleared once. Scripted readings stand in for the
// runtime and a fixed clock for time, so the output is exact: the count
// hovering between the clear and raise thresholds produces nothing.
func Example() {
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	goroutines := []uint64{50, 120, 130, 95, 85, 70, 60}
	next := 0
	w, err := memwatch.New(memwatch.Config{
		Goroutines:      100,
		GoroutinesClear: 80,
		Now:             func() time.Time { return now },
		Source:          func(s *memwatch.Sample) { s.Goroutines = goroutines[next] },
		OnAlert: func(a memwatch.Alert) {
			state := "cleared"
			if a.Raised {
				state = "raised"
			}
			fmt.Printf("%s %s %s: %s\n", a.Time.Format("15:04:05"), a.Kind, state, a.Message)
		},
	})
	if err != nil {
		panic(err)
	}
	for next = range goroutines {
		now = now.Add(5 * time.Second)
		w.Tick()
	}
	fmt.Println("active:", len(w.Active()), "samples:", len(w.History()))
	// Output:
	// 15:00:10 goroutines raised: 120 goroutines (raise at 100, clear below 80)
	// 15:00:30 goroutines cleared: 70 goroutines (raise at 100, clear below 80)
	// active: 0 samples: 7
}

// A Watcher runs one task on the group it is started with, and closing the
// group stops it.
func ExampleWatcher_Start() {
	g := lifecycle.New()
	w, err := memwatch.New(memwatch.Config{})
	if err != nil {
		panic(err)
	}
	if err := w.Start(g); err != nil {
		panic(err)
	}
	for _, t := range g.Tasks() {
		fmt.Println("owned:", t)
	}
	fmt.Println("first sample taken:", !w.Latest().Time.IsZero())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("close:", g.Close(ctx))
	fmt.Println("tasks left:", len(g.Tasks()))
	// Output:
	// owned: memwatch (every 5s)
	// first sample taken: true
	// close: <nil>
	// tasks left: 0
}

// ComputeLimit is the decision SetMemoryLimit applies: a fraction of the
// container's limit, unless GOMEMLIMIT is set explicitly.
func ExampleComputeLimit() {
	const container = 2 << 30 // 2 GiB
	limit, action, _ := memwatch.ComputeLimit(container, 0.85, "")
	fmt.Println(action, limit)
	_, action, _ = memwatch.ComputeLimit(container, 0.85, "1GiB")
	fmt.Println(action)
	_, action, _ = memwatch.ComputeLimit(0, 0.85, "")
	fmt.Println(action)
	_, _, err := memwatch.ComputeLimit(container, 1.5, "")
	fmt.Println(err)
	// Output:
	// set 1825361100
	// kept_env
	// no_cgroup_limit
	// memwatch: memory limit fraction must be in (0, 1], got 1.5
}

// A subscription is a bounded channel: a reader that falls behind loses
// alerts, counted, and never delays sampling.
func ExampleWatcher_Subscribe() {
	goroutines := uint64(0)
	w, err := memwatch.New(memwatch.Config{
		Goroutines: 100,
		Source:     func(s *memwatch.Sample) { s.Goroutines = goroutines },
	})
	if err != nil {
		panic(err)
	}
	sub, err := w.Subscribe(1)
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	for _, n := range []uint64{150, 10, 150} { // raise, clear, raise
		goroutines = n
		w.Tick()
	}
	a := <-sub.C()
	fmt.Println(a.Kind, a.Raised, "dropped:", sub.Dropped())
	// Output:
	// goroutines true dropped: 2
}
