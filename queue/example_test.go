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
	c, _ := queue.NewConsumer(p, queue.ConsumerConfig{}) // this process, one heartbeat for all its workers
	done := make(chan string)
	w, _ := queue.NewWorker(c, q, func(ctx context.Context, job *queue.Job) error {
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
	c, _ := queue.NewConsumer(p, queue.ConsumerConfig{})
	failed := make(chan struct{}, 1)
	w, _ := queue.NewWorker(c, q, func(ctx context.Context, job *queue.Job) error {
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
	// 1 attempt 1 of 5 failed permanently: row 17: bad date
}

// One Consumer per process and namespace: its workers, one per queue, share
// its ConsumerID and its one heartbeat. Closing the group drains every
// worker, then the heartbeat leaves.
func ExampleNewConsumer() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	g := lifecycle.New()

	c, err := queue.NewConsumer(p, queue.ConsumerConfig{ConsumerID: "pod-0", HeartbeatInterval: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	ran := make(chan string)
	handle := func(ctx context.Context, job *queue.Job) error {
		ran <- job.Queue + ": " + string(job.Payload)
		return nil
	}
	for _, name := range []string{"emails", "invoices"} {
		q, _ := queue.New(p, name, queue.Config{})
		w, err := queue.NewWorker(c, q, handle, queue.WorkerConfig{Concurrency: 2})
		if err != nil {
			panic(err)
		}
		if err := w.Start(g); err != nil {
			panic(err)
		}
		_, _ = q.Enqueue(context.Background(), []byte("hello"))
		fmt.Println(<-ran, "(consumer "+w.Stats().ConsumerID+")")
	}

	// A queue of another namespace needs a consumer of its own.
	other, _ := queue.New(p, "emails", queue.Config{Namespace: "staging"})
	_, err = queue.NewWorker(c, other, handle, queue.WorkerConfig{})
	fmt.Println(errors.Is(err, queue.ErrInvalidConfig))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("close:", g.Close(ctx), "tasks left:", len(g.Tasks()))
	heartbeats, _ := p.Client().ZCard(ctx, "{bq}:heartbeats").Result()
	fmt.Println("heartbeats left:", heartbeats)
	// Output:
	// emails: hello (consumer pod-0)
	// invoices: hello (consumer pod-0)
	// true
	// close: <nil> tasks left: 0
	// heartbeats left: 0
}
