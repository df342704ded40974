package queue

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// offsetClock is a process's clock: the wall clock plus an offset a test
// moves forward, so a job due in an hour becomes due without waiting.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time      { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) add(d time.Duration) { c.off.Add(int64(d)) }

// consumerProcess is one worker process of a queue: its own pool, group
// and clock.
type consumerProcess struct {
	g       *lifecycle.Group
	w       *Worker
	clock   *offsetClock
	lastRun atomic.Int64 // when a handler last started, unix nanos
}

func startConsumerProcess(t *testing.T, addr, queue, name string, ran chan<- string, cfg WorkerConfig, cc ...ConsumerConfig) *consumerProcess {
	t.Helper()
	p := mustPool(t, pool.Config{Addrs: []string{addr}})
	c := &consumerProcess{g: group(t), clock: &offsetClock{}}
	q := mustQueue(t, p, queue, Config{Now: c.clock.now})
	c.w = startWorker(t, c.g, q, func(ctx context.Context, j *Job) error {
		c.lastRun.Store(time.Now().UnixNano())
		select {
		case ran <- name + ":" + string(j.Payload):
		default: // reported by the test as a missing or extra run
		}
		return nil
	}, cfg, cc...)
	return c
}

// schedulerIdle waits until the scheduler completed a read that found
// nothing delayed.
func schedulerIdle(t *testing.T, w *Worker) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "the scheduler's first read", func() bool {
		return w.sched.reads.Load() > 0 && !w.sched.known.Load()
	})
}

// Item 1 of issue 13: only the scheduler whose fetcher took the wake marker
// learns a remote job's due time. When that process stops, its scheduler
// hands the knowledge over with a marker, and the other worker promotes the
// job when it is due.
func TestDelayedJobIsHandedOverWhenItsSchedulerStops(t *testing.T) {
	srv := redistest.Server(t)
	cfg := WorkerConfig{BlockTimeout: time.Second, Concurrency: 2}
	ran := make(chan string, 4)
	a := startConsumerProcess(t, srv.Addr(), "handover", "a", ran, cfg)
	b := startConsumerProcess(t, srv.Addr(), "handover", "b", ran, cfg)
	schedulerIdle(t, a.w)
	schedulerIdle(t, b.w)

	producer := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{srv.Addr()}}), "handover", Config{})
	_, err := producer.Enqueue(context.Background(), []byte("x"), Delay(time.Hour))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "one scheduler took the marker", func() bool {
		return a.w.sched.known.Load() || b.w.sched.known.Load()
	})
	learner, other := a, b
	if b.w.sched.known.Load() {
		learner, other = b, a
	}
	require.False(t, other.w.sched.known.Load(), "only one scheduler learned the due time")

	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, learner.g.Close(closeCtx))
	other.clock.add(time.Hour + time.Second)
	got := recv(t, ran, 15*time.Second, "the delayed job to run on the remaining worker")
	require.Equal(t, string([]byte{"ab"[boolIndex(other == b)]})+":x", got)
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A process that knew the earliest due time can also die without handing
// over. It announced the due time in the heartbeat set when it read it
// (due.go), so a worker that knows only of a later job re-reads within a
// HeartbeatInterval of the earlier one's due time, not when the later job
// is due.
func TestEarlierDelayedJobKnownOnlyToADeadProcessIsPromoted(t *testing.T) {
	srv := redistest.Server(t)
	ran := make(chan string, 4)
	s := startConsumerProcess(t, srv.Addr(), "recheck", "s", ran, WorkerConfig{BlockTimeout: time.Second},
		ConsumerConfig{HeartbeatInterval: 200 * time.Millisecond, HeartbeatTTL: time.Minute})
	schedulerIdle(t, s.w)
	q := s.w.q
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("later"), Delay(time.Hour))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "the scheduler knows of the later job and announced it", func() bool {
		return s.w.sched.known.Load() && s.w.sched.announced.Load() > 0
	})

	// An earlier job, announced to a process that died before its due time
	// (written directly: no marker reaches this worker), with the due
	// announcement that process wrote.
	early := envelope{id: "early", maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("early")}
	due := float64(time.Now().Add(300 * time.Millisecond).UnixMilli())
	require.NoError(t, q.p.Client().ZAdd(ctx, q.k.delayed, redis.Z{Score: due, Member: early.encode()}).Err())
	require.NoError(t, q.p.Client().ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: due, Member: dueMember(q.k.tag)}).Err())
	require.Equal(t, "s:early", recv(t, ran, 15*time.Second, "the earlier job"))
}

// When the only process that knew a delayed job's due time dies while every
// other worker believes nothing is delayed, the heartbeat that finds the
// dead consumer makes the others re-read the delayed set.
func TestDelayedJobOfADeadProcessIsPromotedWhenItIsSeenDead(t *testing.T) {
	srv := redistest.Server(t)
	ran := make(chan string, 4)
	s := startConsumerProcess(t, srv.Addr(), "deadknower", "s", ran,
		WorkerConfig{BlockTimeout: time.Second}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
	schedulerIdle(t, s.w)
	q := s.w.q
	ctx := context.Background()
	c := q.p.Client()
	// The job the dead process had learned of, then the process's expired
	// heartbeat.
	job := envelope{id: "orphan", maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("orphan")}
	require.NoError(t, c.ZAdd(ctx, q.k.delayed, redis.Z{Score: float64(time.Now().UnixMilli()), Member: job.encode()}).Err())
	require.NoError(t, c.ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "knower"}).Err())
	require.Equal(t, "s:orphan", recv(t, ran, 15*time.Second, "the orphaned job"))
}
