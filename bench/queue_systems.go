package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// queueSystem is a queue implementation as the queue cases drive it:
// producers enqueue into queues 0..n-1, consumers call a handler with each
// job's payload.
type queueSystem interface {
	// Enqueue adds one job to queue q.
	Enqueue(ctx context.Context, q int, payload []byte) error
	// EnqueueAll adds jobs to queue q the fastest way the implementation
	// offers: a batch command, or parallel calls where it has none.
	EnqueueAll(ctx context.Context, q int, payloads [][]byte) error
	// Start starts the consumers; each job's run calls h with its payload.
	// ctx bounds the run.
	Start(ctx context.Context, h func(payload []byte)) error
	// Stop stops the consumers, letting them finish and acknowledge the
	// jobs they hold.
	Stop(ctx context.Context) error
	// Left counts the jobs still in Redis: ready, in flight, delayed,
	// retrying or dead.
	Left(ctx context.Context) (int64, error)
	// Close releases the clients.
	Close() error
}

// queueShape is queues x consumers per queue.
type queueShape struct{ queues, conc int }

func (s queueShape) String() string {
	if s.queues == 1 {
		return fmt.Sprintf("1 queue x %d", s.conc)
	}
	return fmt.Sprintf("%d queues x %d", s.queues, s.conc)
}

// blockTimeout is how long one BLMOVE of bounded and of the hand-written
// loop waits: bounded's default.
const blockTimeout = queue.DefaultBlockTimeout

// newQueueSystem builds an implementation of shape on the server at addr;
// r receives notes (a peer's logged errors).
type newQueueSystem func(addr string, shape queueShape, r *Run) (queueSystem, error)

func queueNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint("bench", i)
	}
	return out
}

// boundedQueues: one pool, one Queue per queue, one Worker per queue with
// Concurrency conc, all on one lifecycle group; every config at its zero
// value (the defaults).
type boundedQueues struct {
	shape queueShape
	p     *pool.Pool
	qs    []*queue.Queue
	g     *lifecycle.Group
}

func newBoundedQueues(addr string, shape queueShape, _ *Run) (queueSystem, error) {
	p, err := pool.New(pool.Config{Addrs: []string{addr}})
	if err != nil {
		return nil, err
	}
	b := &boundedQueues{shape: shape, p: p}
	for _, name := range queueNames(shape.queues) {
		q, err := queue.New(p, name, queue.Config{})
		if err != nil {
			_ = p.Close()
			return nil, err
		}
		b.qs = append(b.qs, q)
	}
	return b, nil
}

func (b *boundedQueues) Enqueue(ctx context.Context, q int, payload []byte) error {
	_, err := b.qs[q].Enqueue(ctx, payload)
	return err
}

func (b *boundedQueues) EnqueueAll(ctx context.Context, q int, payloads [][]byte) error {
	for len(payloads) > 0 {
		n := min(len(payloads), 1000)
		if _, err := b.qs[q].EnqueueBatch(ctx, payloads[:n]); err != nil {
			return err
		}
		payloads = payloads[n:]
	}
	return nil
}

func (b *boundedQueues) Start(_ context.Context, h func([]byte)) error {
	b.g = lifecycle.New()
	c, err := queue.NewConsumer(b.p, queue.ConsumerConfig{})
	if err != nil {
		return err
	}
	for _, q := range b.qs {
		w, err := queue.NewWorker(c, q, func(_ context.Context, j *queue.Job) error {
			h(j.Payload)
			return nil
		}, queue.WorkerConfig{Concurrency: b.shape.conc})
		if err != nil {
			return err
		}
		if err := w.Start(b.g); err != nil {
			return err
		}
	}
	return nil
}

func (b *boundedQueues) Stop(ctx context.Context) error {
	if b.g == nil {
		return nil
	}
	return b.g.Close(ctx)
}

func (b *boundedQueues) Left(ctx context.Context) (int64, error) {
	var n int64
	for _, q := range b.qs {
		st, err := q.Stats(ctx)
		if err != nil {
			return 0, err
		}
		n += st.Ready + st.Delayed + st.InFlight + st.Dead
	}
	return n, nil
}

// Close drains the workers if Stop did not (Close is idempotent), then
// closes the pool.
func (b *boundedQueues) Close() error {
	if b.g != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.g.Close(ctx)
	}
	return b.p.Close()
}

// asynqQueues: one asynq.Server with Concurrency queues*conc over the
// queues at equal priority (asynq's way to consume several queues in one
// process), and one asynq.Client, as asynq's README sets them up; every
// other setting is asynq's default.
type asynqQueues struct {
	opt   asynq.RedisClientOpt
	names []string
	srv   *asynq.Server
	cli   *asynq.Client
	log   *asynqLog
}

func newAsynqQueues(addr string, shape queueShape, r *Run) (queueSystem, error) {
	opt := asynq.RedisClientOpt{Addr: addr}
	a := &asynqQueues{opt: opt, names: queueNames(shape.queues), log: &asynqLog{r: r}}
	prio := map[string]int{}
	for _, n := range a.names {
		prio[n] = 1
	}
	a.srv = asynq.NewServer(opt, asynq.Config{
		Concurrency: shape.queues * shape.conc,
		Queues:      prio,
		Logger:      a.log,
		LogLevel:    asynq.WarnLevel,
	})
	a.cli = asynq.NewClient(opt)
	return a, nil
}

func (a *asynqQueues) Enqueue(ctx context.Context, q int, payload []byte) error {
	_, err := a.cli.EnqueueContext(ctx, asynq.NewTask("noop", payload), asynq.Queue(a.names[q]))
	return err
}

// EnqueueAll enqueues from 16 goroutines: asynq has no batch enqueue.
func (a *asynqQueues) EnqueueAll(ctx context.Context, q int, payloads [][]byte) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { // ends when the payloads run out; waited for below
			for {
				i := int(next.Add(1) - 1)
				if i >= len(payloads) {
					return
				}
				if err := a.Enqueue(ctx, q, payloads[i]); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

func (a *asynqQueues) Start(_ context.Context, h func([]byte)) error {
	return a.srv.Start(asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error {
		h(t.Payload())
		return nil
	}))
}

// Stop is asynq's graceful shutdown; it waits up to its ShutdownTimeout
// (8s) for running handlers.
func (a *asynqQueues) Stop(context.Context) error {
	a.srv.Shutdown()
	return nil
}

func (a *asynqQueues) Left(ctx context.Context) (int64, error) {
	insp := asynq.NewInspector(a.opt)
	defer insp.Close()
	var n int64
	for _, name := range a.names {
		info, err := insp.GetQueueInfo(name)
		if errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		n += int64(info.Pending + info.Active + info.Scheduled + info.Retry + info.Archived + info.Aggregating)
	}
	return n, ctx.Err()
}

func (a *asynqQueues) Close() error {
	a.srv.Shutdown() // does nothing when stopped or never started
	a.log.flush()
	return a.cli.Close()
}

// asynqLog is asynq's logger: it keeps warnings and errors for a note
// under the table instead of printing them over the progress line.
type asynqLog struct {
	r     *Run
	mu    sync.Mutex
	n     int
	first string
}

func (l *asynqLog) Debug(...any) {}
func (l *asynqLog) Info(...any)  {}
func (l *asynqLog) Warn(args ...any) {
	l.keep("warning", args)
}
func (l *asynqLog) Error(args ...any) { l.keep("error", args) }
func (l *asynqLog) Fatal(args ...any) { l.keep("fatal", args) }

func (l *asynqLog) keep(level string, args []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if l.first == "" {
		l.first = level + ": " + truncate(fmt.Sprint(args...), 160)
	}
}

func (l *asynqLog) flush() {
	l.mu.Lock()
	n, first := l.n, l.first
	l.mu.Unlock()
	if n > 0 {
		l.r.Note("asynq logged %d warnings or errors in %s (the first: %q)", n, l.r.cname, first)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// handwritten is the reference anyone could write in an afternoon: per
// queue, conc goroutines each looping BLMOVE ready -> its own processing
// list, run, LREM, each on a connection of its own. The LREMs go through a
// second client, so that Stop can end the blocked BLMOVEs by closing theirs
// while acknowledgements finish.
type handwritten struct {
	shape      queueShape
	fetch, ack *redis.Client
	stopping   atomic.Bool
	errs       atomic.Int64
	wg         sync.WaitGroup
}

func newHandwritten(addr string, shape queueShape, _ *Run) (queueSystem, error) {
	n := shape.queues * shape.conc
	return &handwritten{
		shape: shape,
		fetch: redis.NewClient(&redis.Options{Addr: addr, PoolSize: n}),
		ack:   redis.NewClient(&redis.Options{Addr: addr, PoolSize: n}),
	}, nil
}

func hwReady(q int) string        { return fmt.Sprintf("hw:%d:ready", q) }
func hwProc(q, worker int) string { return fmt.Sprintf("hw:%d:proc:%d", q, worker) }

func (h *handwritten) Enqueue(ctx context.Context, q int, payload []byte) error {
	return h.ack.LPush(ctx, hwReady(q), payload).Err()
}

func (h *handwritten) EnqueueAll(ctx context.Context, q int, payloads [][]byte) error {
	vals := make([]any, 0, 1000)
	for len(payloads) > 0 {
		n := min(len(payloads), 1000)
		vals = vals[:0]
		for _, p := range payloads[:n] {
			vals = append(vals, p)
		}
		if err := h.ack.LPush(ctx, hwReady(q), vals...).Err(); err != nil {
			return err
		}
		payloads = payloads[n:]
	}
	return nil
}

func (h *handwritten) Start(ctx context.Context, handle func([]byte)) error {
	for q := range h.shape.queues {
		for i := range h.shape.conc {
			h.wg.Go(func() { // ends at Stop, which waits for it
				ready, proc := hwReady(q), hwProc(q, i)
				for !h.stopping.Load() && ctx.Err() == nil {
					v, err := h.fetch.BLMove(ctx, ready, proc, "RIGHT", "LEFT", blockTimeout).Result()
					if errors.Is(err, redis.Nil) {
						continue
					}
					if err != nil {
						if !h.stopping.Load() {
							h.errs.Add(1)
							time.Sleep(10 * time.Millisecond) // a reference loop's crude backoff
						}
						continue
					}
					handle([]byte(v))
					if err := h.ack.LRem(ctx, proc, 1, v).Err(); err != nil {
						h.errs.Add(1)
					}
				}
			})
		}
	}
	return nil
}

func (h *handwritten) Stop(context.Context) error {
	h.stopping.Store(true)
	err := h.fetch.Close() // ends the blocked BLMOVEs; nothing is left to move
	h.wg.Wait()
	if n := h.errs.Load(); n > 0 {
		return fmt.Errorf("the hand-written loop saw %d Redis errors", n)
	}
	return err
}

func (h *handwritten) Left(ctx context.Context) (int64, error) {
	var n int64
	for q := range h.shape.queues {
		keys := []string{hwReady(q)}
		for i := range h.shape.conc {
			keys = append(keys, hwProc(q, i))
		}
		for _, k := range keys {
			l, err := h.ack.LLen(ctx, k).Result()
			if err != nil {
				return 0, err
			}
			n += l
		}
	}
	return n, nil
}

func (h *handwritten) Close() error {
	h.stopping.Store(true)
	_ = h.fetch.Close()
	h.wg.Wait()
	return h.ack.Close()
}
