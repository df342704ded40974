package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// ghost writes a dead consumer holding jobs: its processing list, and a
// heartbeat whose deadline passed at diedAt. It is not in the queue's
// consumers set, so only the heartbeat's view of the dead finds it.
func ghost(t *testing.T, c redis.UniversalClient, q *Queue, id string, diedAt time.Time, payloads ...string) {
	t.Helper()
	ctx := context.Background()
	for _, p := range payloads {
		env := envelope{id: p, maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte(p)}
		require.NoError(t, c.LPush(ctx, q.k.proc(id), env.encode()).Err())
	}
	require.NoError(t, c.ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: float64(diedAt.UnixMilli()), Member: id}).Err())
}

// beats waits until this process's heartbeat deadline moved n times: n
// ticks happened.
func beats(t *testing.T, c redis.UniversalClient, q *Queue, w *Worker, n int) {
	t.Helper()
	ctx := context.Background()
	last := 0.0
	for range n {
		testutil.Eventually(t, 5*time.Second, "a heartbeat", func() bool {
			s, err := c.ZScore(ctx, heartbeatKey(q.cfg.Namespace), w.Stats().ConsumerID).Result()
			if err == nil && s != last {
				last = s
				return true
			}
			return false
		})
	}
}

// A sweep that could not run (another process held the queue's sweep lock)
// is tried again on later heartbeats, not written off.
func TestSweepIsRetriedUntilItCompletes(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testSweepIsRetried(t, np) })
	}
}

func testSweepIsRetried(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "retrysweep", Config{})
	c := p.Client()
	require.NoError(t, c.Set(ctx, q.k.sweepLock, "someone-else", time.Minute).Err())

	g := group(t)
	ran := make(chan string, 4)
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error { ran <- j.ID; return nil },
		WorkerConfig{}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
	// The consumer dies after the worker started: only the heartbeat finds it.
	ghost(t, c, q, "ghost", time.Now().Add(-time.Second), "late")
	beats(t, c, q, w, 3)
	require.Zero(t, w.Stats().Recovered, "the lock is held by another process")
	require.NoError(t, c.Del(ctx, q.k.sweepLock).Err())
	select {
	case id := <-ran:
		require.Equal(t, "late", id)
	case <-time.After(10 * time.Second):
		t.Fatal("the dead consumer's job was never recovered once the lock was free")
	}
}

// However many consumers died within the heartbeat retention, each one is
// seen: the most recently dead at once, older ones a page per heartbeat.
func TestManyDeadConsumersAreAllSwept(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			q := mustQueue(t, p, "manydead", Config{})
			c := p.Client()
			g := group(t)
			var mu sync.Mutex
			seen := map[string]bool{}
			w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
				mu.Lock()
				seen[j.ID] = true
				mu.Unlock()
				return nil
			}, WorkerConfig{}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})

			now := time.Now()
			// The oldest one holds a job, with 2.5 pages of newer dead after
			// it; then a fresh one holds a job too.
			ghost(t, c, q, "old-ghost", now.Add(-30*time.Minute), "old")
			for i := range 2*deadPage + deadPage/2 {
				ghost(t, c, q, fmt.Sprintf("empty-%03d", i), now.Add(-20*time.Minute+time.Duration(i)*time.Second))
			}
			ghost(t, c, q, "new-ghost", now.Add(-time.Second), "new")
			testutil.Eventually(t, 10*time.Second, "both dead consumers' jobs ran", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return seen["old"] && seen["new"]
			})
			// The handler can run a job before the sweep counts it.
			testutil.Eventually(t, 5*time.Second, "both counted as recovered", func() bool { return w.Stats().Recovered == 2 })
		})
	}
}

// When Redis does not let a closing worker put its jobs back, Close says so
// and the process does not remove its heartbeat: it expires, and another
// process recovers the jobs as it would a crashed one's.
func TestFailedDrainLeavesTheHeartbeatToExpire(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			ctx := context.Background()
			q := mustQueue(t, p, "faildrain", Config{})
			c := p.Client()

			g := lifecycle.New()
			started := make(chan struct{})
			w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
				close(started)
				<-ctx.Done() // cancelled by the drain: the job stays ours
				return ctx.Err()
			}, WorkerConfig{Concurrency: 1, BlockTimeout: time.Second}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
			_, err := q.Enqueue(ctx, []byte("held"))
			require.NoError(t, err)
			testutil.Recv(t, started, "the handler")
			id := w.Stats().ConsumerID
			// The ready list turns into a string: moving jobs back into it
			// fails (WRONGTYPE), while the heartbeat set works as ever.
			require.NoError(t, c.Set(ctx, q.k.ready, "not a list", 0).Err())

			// 4s, not 1.5s: finish stops retrying a quarter of what is left
			// (at most 200ms) before the deadline, and with 1.5s that left
			// 75ms for the tasks to return, missed under load.
			cctx, cancel := context.WithTimeout(ctx, 4*time.Second)
			err = g.Close(cctx)
			cancel()
			require.Error(t, err)
			require.Contains(t, err.Error(), "putting unfinished jobs back")
			require.False(t, errors.Is(err, context.DeadlineExceeded), "every task returned by the deadline: %v", err)

			n, err := c.LLen(ctx, q.k.proc(id)).Result()
			require.NoError(t, err)
			require.Equal(t, int64(1), n, "the job is still in the processing list")
			_, err = c.ZScore(ctx, heartbeatKey(q.cfg.Namespace), id).Result()
			require.NoError(t, err, "the heartbeat was left to expire, not removed")

			// Redis is usable again; another process sees the heartbeat
			// expire and recovers the job.
			require.NoError(t, c.Del(ctx, q.k.ready).Err())
			g2 := group(t)
			ran := make(chan string, 1)
			startWorker(t, g2, q, func(ctx context.Context, j *Job) error { ran <- string(j.Payload); return nil },
				WorkerConfig{}, ConsumerConfig{ConsumerID: "other", HeartbeatInterval: 100 * time.Millisecond})
			select {
			case got := <-ran:
				require.Equal(t, "held", got)
			case <-time.After(10 * time.Second):
				t.Fatal("the job held by the failed drain was never recovered")
			}
		})
	}
}

// With the acker unable to write outcomes, the fetcher can end up waiting to
// hand it one more; closing the group must still stop the fetcher, and
// everything fetched goes back to the ready list.
//
// On a real server: the drain's put-back gets the last tenth of the Close
// deadline (300ms here), and miniredis's Lua, under -race on a loaded
// machine, took longer than that to move the maxAckBatch+3 fetched elements
// back (one LREM and LPUSH each); redis-server does it in about a
// millisecond.
func TestCloseWithAckerBackedUp(t *testing.T) {
	p := serverPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "backedup", Config{})
	c := p.Client()
	// Dead-lettering fails (the dead index is a string), and every element
	// is malformed, so every outcome is a dead letter that cannot be written.
	require.NoError(t, c.Set(ctx, q.k.deadIdx, "not a zset", 0).Err())
	const total = maxAckBatch + 50
	for i := range total {
		require.NoError(t, c.LPush(ctx, q.k.ready, fmt.Sprintf("garbage %d", i)).Err())
	}
	g := lifecycle.New()
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error { return nil }, WorkerConfig{Concurrency: 1, BlockTimeout: time.Second})
	testutil.Eventually(t, 10*time.Second, "the fetcher stuck handing over an outcome", func() bool {
		return w.Stats().Malformed >= maxAckBatch+2*1+1
	})
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	require.NoError(t, g.Close(cctx))
	n, err := c.LLen(ctx, q.k.ready).Result()
	require.NoError(t, err)
	require.Equal(t, int64(total), n, "every element is back in the ready list")
}

// An ack for a job holding an idempotency key frees the key only if the job
// was still ours: after a sweep handed it to another consumer, that one may
// be running it, and duplicates must stay out.
func TestLostLeaseKeepsTheIdempotencyKey(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "lostlease", Config{})
	c := p.Client()
	g := group(t)
	var w *Worker
	done := make(chan struct{})
	w = startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		// A sweep moves the job to another consumer's list while it runs.
		proc := q.k.proc(w.Stats().ConsumerID)
		defer close(done)
		elems, err := c.LRange(ctx, proc, 0, -1).Result()
		if !assert.NoError(t, err) || !assert.Len(t, elems, 1) {
			return nil
		}
		assert.NoError(t, c.LRem(ctx, proc, 1, elems[0]).Err())
		assert.NoError(t, c.LPush(ctx, q.k.proc("someone-else"), elems[0]).Err())
		return nil
	}, WorkerConfig{})
	_, err := q.Enqueue(ctx, []byte("x"), ID("order-1"))
	require.NoError(t, err)
	testutil.Recv(t, done, "the handler")
	testutil.Eventually(t, 5*time.Second, "the ack found the job gone", func() bool { return w.Stats().LostLeases == 1 })
	_, err = q.Enqueue(ctx, []byte("x"), ID("order-1"))
	require.ErrorIs(t, err, ErrDuplicate, "the job may still run elsewhere")
}

// With full pages of dead consumers, those already swept are not swept
// again: the rotation reading past the last page must not wipe the memo.
func TestFullPagesOfDeadAreNotReswept(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	q := mustQueue(t, p, "pagewipe", Config{})
	c := p.Client()
	now := time.Now()
	for i := range 2 * deadPage {
		ghost(t, c, q, fmt.Sprintf("gone-%03d", i), now.Add(-10*time.Minute+time.Duration(i)*time.Second))
	}
	lranges := func() int64 {
		s, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return s["lrange"]
	}
	g := group(t)
	w := startWorker(t, g, q, func(context.Context, *Job) error { return nil },
		WorkerConfig{}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
	testutil.Eventually(t, 10*time.Second, "every dead consumer swept once", func() bool { return lranges() >= 2*deadPage })
	beats(t, c, q, w, 2)
	before := lranges()
	beats(t, c, q, w, 6)
	after := lranges()
	require.Less(t, after-before, int64(deadPage), "%d LRANGEs in 6 idle heartbeats: already-swept dead consumers were swept again", after-before)
}

// A requeue that meets a foreign key in place of the dead index fails
// before it writes anything: the job stays in the dead letters.
func TestRequeueWithForeignDeadIndexKeepsTheJob(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			ctx := context.Background()
			q := mustQueue(t, p, "requeueforeign", Config{})
			c := p.Client()
			env := envelope{id: "j1", maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("x")}
			ks, args := q.deadAddArgs(env.encode(), deadLetter{id: "j1", reason: "test", attempts: 1})
			require.NoError(t, deadScript.Run(ctx, c, ks, args...).Err())
			require.NoError(t, c.Set(ctx, q.k.deadIdx, "not a zset", 0).Err())
			_, err := q.Requeue(ctx, "j1")
			require.Error(t, err)
			inDead, err := c.HExists(ctx, q.k.deadData, "j1").Result()
			require.NoError(t, err)
			require.True(t, inDead, "the job left the dead letters without reaching the ready list")
		})
	}
}

// A clean Close on a Redis that has not cached the ack scripts yet does
// not put finished jobs back: outcomes refused with NOSCRIPT are sent again
// at once, also in the drain's last flush.
func TestDrainAckOfUniqueJobIsNotPutBack(t *testing.T) {
	putBack := 0
	for range 50 {
		p := miniPool(t, pool.Config{})
		ctx := context.Background()
		q := mustQueue(t, p, "drainnoscript", Config{})
		c := p.Client()
		relX, relY := make(chan struct{}), make(chan struct{})
		var running atomic.Int32
		g := lifecycle.New()
		w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
			running.Add(1)
			rel := relY
			if string(j.Payload) == "x" {
				rel = relX
			}
			select {
			case <-rel:
			case <-ctx.Done():
			}
			return nil
		}, WorkerConfig{Concurrency: 2, BlockTimeout: time.Second})
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("y"), ID("y"))
		require.NoError(t, err)
		testutil.Eventually(t, 5*time.Second, "both running", func() bool { return running.Load() == 2 })
		// Redis forgets the scripts, as after a restart.
		require.NoError(t, c.ScriptFlush(ctx).Err())
		closed := make(chan error, 1)
		go func() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			closed <- g.Close(cctx)
		}()
		testutil.Eventually(t, 5*time.Second, "fetcher stopped", func() bool { return w.Stats().FetcherState == "stopped" })
		close(relX)
		close(relY)
		require.NoError(t, testutil.Recv(t, closed, "Close"))
		n, err := c.LLen(ctx, q.k.ready).Result()
		require.NoError(t, err)
		if n > 0 {
			putBack++
		}
	}
	require.Zero(t, putBack, "finished jobs put back in %d of 50 clean Closes", putBack)
}
