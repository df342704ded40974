package queue_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

func Example() {
	m := miniredis.NewMiniRedis() // any Redis; an embedded one keeps the example self-contained
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	g := lifecycle.New()
	_ = g.OnClose("redis pool", func(context.Context) error { return p.Close() }) // first registered, last closed

	q, _ := queue.New(p, "emails", queue.Config{})
	done := make(chan string)
	w, _ := queue.NewWorker(q, func(ctx context.Context, job *queue.Job) error {
		done <- fmt.Sprintf("sent %s (attempt %d)", job.Payload, job.Attempt)
		return nil
	}, queue.WorkerConfig{Concurrency: 5})
	if err := w.Start(g); err != nil {
		panic(err)
	}

	ctx := context.Background()
	_, _ = q.Enqueue(ctx, []byte("welcome mail"))
	fmt.Println(<-done)
	_, _ = q.Enqueue(ctx, []byte("reminder"), queue.Delay(50*time.Millisecond))
	fmt.Println(<-done)

	// The same ID again while the job exists adds nothing.
	_, _ = q.Enqueue(ctx, []byte("invoice"), queue.ID("invoice-42"), queue.Delay(time.Hour))
	_, err := q.Enqueue(ctx, []byte("invoice"), queue.ID("invoice-42"))
	fmt.Println(errors.Is(err, queue.ErrDuplicate))

	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fmt.Println("close:", g.Close(closeCtx), "tasks left:", len(g.Tasks()))
	// Output:
	// sent welcome mail (attempt 1)
	// sent reminder (attempt 1)
	// true
	// close: <nil> tasks left: 0
}

// A handler error retries the job with backoff; Permanent sends it to the
// dead letters at once, where it can be inspected and requeued.
func ExampleQueue_Dead() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	g := lifecycle.New()

	q, _ := queue.New(p, "imports", queue.Config{})
	failed := make(chan struct{}, 1)
	w, _ := queue.NewWorker(q, func(ctx context.Context, job *queue.Job) error {
		return queue.Permanent(fmt.Errorf("row %s: bad date", job.Payload))
	}, queue.WorkerConfig{OnError: func(*queue.Job, error) { failed <- struct{}{} }})
	_ = w.Start(g)

	ctx := context.Background()
	_, _ = q.Enqueue(ctx, []byte("17"))
	<-failed
	_ = g.Close(ctx) // the drain writes every outcome before it returns
	dead, _ := q.Dead(ctx, 0, 10)
	fmt.Println(len(dead), dead[0].Reason)
	// Output:
	// 1 attempt 1 of 5 failed permanently: permanent: row 17: bad date
}
