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

// One worker runs several kinds of jobs: the Mux routes each by its type,
// middleware wraps every run, and a type nobody handles goes to the dead
// letters at once, its type in the reason.
func ExampleMux() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	g := lifecycle.New()

	q, _ := queue.New(p, "work", queue.Config{})
	ran := make(chan string)
	mux := new(queue.Mux)
	mux.Handle("email.send", func(ctx context.Context, job *queue.Job) error {
		ran <- "sending " + string(job.Payload)
		return nil
	})
	mux.Handle("invoice.render", func(ctx context.Context, job *queue.Job) error {
		ran <- "rendering " + string(job.Payload)
		return nil
	})
	logRuns := func(next queue.Handler) queue.Handler {
		return func(ctx context.Context, job *queue.Job) error {
			err := next(ctx, job)
			if errors.Is(err, queue.ErrUnknownType) {
				ran <- "no handler for " + job.Type
			}
			return err
		}
	}
	c, _ := queue.NewConsumer(p, queue.ConsumerConfig{})
	w, _ := queue.NewWorker(c, q, queue.Chain(mux.Run, logRuns), queue.WorkerConfig{Concurrency: 1})
	if err := w.Start(g); err != nil {
		panic(err)
	}

	ctx := context.Background()
	_, _ = q.Enqueue(ctx, []byte("welcome mail"), queue.Type("email.send"))
	fmt.Println(<-ran)
	_, _ = q.Enqueue(ctx, []byte("invoice 42"), queue.Type("invoice.render"))
	fmt.Println(<-ran)
	_, _ = q.Enqueue(ctx, []byte("?"), queue.Type("sms.send"))
	fmt.Println(<-ran)

	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fmt.Println("close:", g.Close(closeCtx))
	dead, _ := q.Dead(ctx, 0, 10)
	fmt.Println("dead:", len(dead), dead[0].Type)
	// Output:
	// sending welcome mail
	// rendering invoice 42
	// no handler for sms.send
	// close: <nil>
	// dead: 1 sms.send
}

type Welcome struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

// Producers enqueue values and handlers receive them decoded: no bytes by
// hand. A payload that does not decode is a permanent failure naming the
// job, its type and the Go type.
func ExampleHandleJSON() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	g := lifecycle.New()

	q, _ := queue.New(p, "mail", queue.Config{})
	done := make(chan string)
	mux := new(queue.Mux)
	mux.Handle("email.welcome", queue.HandleJSON(func(ctx context.Context, job *queue.Job, v Welcome) error {
		done <- fmt.Sprintf("welcome %s <%s>", v.Name, v.Email)
		return nil
	}))
	c, _ := queue.NewConsumer(p, queue.ConsumerConfig{})
	w, _ := queue.NewWorker(c, q, mux.Run, queue.WorkerConfig{
		OnError: func(job *queue.Job, err error) { done <- err.Error() },
	})
	if err := w.Start(g); err != nil {
		panic(err)
	}

	ctx := context.Background()
	_, _ = queue.EnqueueJSON(ctx, q, Welcome{Email: "ada@example.com", Name: "Ada"}, queue.Type("email.welcome"))
	fmt.Println(<-done)
	_, _ = q.Enqueue(ctx, []byte("{oops"), queue.Type("email.welcome"), queue.ID("bad-1"))
	fmt.Println(<-done)

	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fmt.Println("close:", g.Close(closeCtx))
	// Output:
	// welcome Ada <ada@example.com>
	// queue: cannot decode the job's payload: job bad-1 of type "email.welcome" into queue_test.Welcome: invalid character 'o' looking for beginning of object key string
	// close: <nil>
}

// Config.BeforeEnqueue sees every job a producer enqueues, with the
// caller's ctx: here it copies a request ID into the job's headers and
// refuses jobs without one.
func ExampleConfig_beforeEnqueue() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()

	type requestID struct{}
	q, _ := queue.New(p, "audit", queue.Config{
		BeforeEnqueue: func(ctx context.Context, job *queue.Enqueuing) error {
			id, ok := ctx.Value(requestID{}).(string)
			if !ok {
				return errors.New("no request ID in ctx")
			}
			return job.SetHeader("request-id", id)
		},
	})
	ctx := context.WithValue(context.Background(), requestID{}, "req-42")
	id, _ := q.Enqueue(ctx, []byte("entry"))
	info, _ := q.Get(ctx, id)
	fmt.Println(info.State)
	_, err := q.Enqueue(context.Background(), []byte("entry"))
	fmt.Println(err)
	// Output:
	// ready
	// queue "audit": enqueue: queue: Config.BeforeEnqueue refused the job: no request ID in ctx
}
