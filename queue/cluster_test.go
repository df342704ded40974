package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// clusterPools returns a newPoolFunc on the cluster c, which it empties
// first: subtests share one cluster (starting one takes about two seconds).
func clusterPools(c *redistest.RedisCluster) newPoolFunc {
	return func(t testing.TB, cfg pool.Config) *pool.Pool {
		t.Helper()
		require.NoError(t, c.Flush(context.Background()))
		cfg.Addrs, cfg.ClusterMode = c.Addrs(), true
		return mustPool(t, cfg)
	}
}

// TestCluster runs the Redis-semantics tests on a real 3-master Redis
// Cluster.
func TestCluster(t *testing.T) {
	c := redistest.Cluster(t)
	np := clusterPools(c)
	t.Run("JobsRunExactlyOnce", func(t *testing.T) { testJobsRunExactlyOnce(t, np) })
	t.Run("DelayedJobsRunAtTheirTime", func(t *testing.T) { testDelayedJobsRunAtTheirTime(t, np) })
	t.Run("DeadConsumerIsSwept", func(t *testing.T) { testDeadConsumerIsSwept(t, np) })
	t.Run("QueuesOnEveryMaster", func(t *testing.T) { testQueuesOnEveryMaster(t, c, np) })
	t.Run("MaxLenNeverOvershoots", func(t *testing.T) { testMaxLenNeverOvershoots(t, np) })
	t.Run("WaitForRoomIsWoken", func(t *testing.T) { testWaitForRoomIsWoken(t, np) })
	t.Run("MaxLenLargeBatchIsAllOrNone", func(t *testing.T) { testLargeBatch(t, np) })
	t.Run("MaxLenLargeBatchNoScript", func(t *testing.T) { testLargeBatchNoScript(t, np) })
	t.Run("InspectorAcrossSlots", func(t *testing.T) { testInspectorAcrossSlots(t, c, np) })
	t.Run("OneHubPerSlotGroup", func(t *testing.T) { testOneHubPerSlotGroup(t, c, np) })
	t.Run("Limits", func(t *testing.T) { testLimitConcurrency(t, np) })
	t.Run("PauseAndResume", func(t *testing.T) { testPauseAndResume(t, np(t, pool.Config{}), np(t, pool.Config{})) })
	t.Run("Partitions", func(t *testing.T) {
		testPartitionBacklog(t, np)
		testPartitionBounds(t, np)
		testPartitionDeadConsumer(t, np)
		testPartitionRetry(t, np)
		testPartitionInspected(t, np)
	})
	t.Run("PartitionWaitForRoomTake", func(t *testing.T) { testPartitionWaitForRoomTake(t, np) })
	t.Run("PartitionWaitForRoomWorker", func(t *testing.T) { testPartitionWaitForRoomWorker(t, np, Limit{}) })
	t.Run("PartitionWaitForRoomLimited", func(t *testing.T) {
		testPartitionWaitForRoomWorker(t, np, Limit{PartitionConcurrency: 5})
	})
	t.Run("RoomMadeWakesWaiters", func(t *testing.T) { testRoomMadeWakes(t, np) })
	// Priority levels (levels.go): every level list in the queue's slot.
	t.Run("PriorityJumpsTheBacklog", func(t *testing.T) { testPriorityJumpsTheBacklog(t, np) })
	t.Run("PriorityRetryAndRequeue", func(t *testing.T) { testPriorityRetryAndRequeue(t, np) })
	t.Run("PriorityMaxLen", func(t *testing.T) { testPriorityMaxLen(t, np) })
	t.Run("PriorityInspector", func(t *testing.T) { testPriorityInspector(t, np) })
	t.Run("PartitionPriority", func(t *testing.T) {
		testPartitionPriorityJumps(t, np)
		testPartitionPriorityPutBack(t, np)
	})
	ctl := clusterPoolsOf(c)
	t.Run("GetStates", func(t *testing.T) { testGetStates(t, ctl) })
	t.Run("CancelWaiting", func(t *testing.T) { testCancelWaiting(t, ctl) })
	t.Run("CancelRunningAcrossProcesses", func(t *testing.T) { testCancelRunning(t, ctl) })
	t.Run("CancelDuringRetryDelay", func(t *testing.T) { testCancelDuringRetryDelay(t, ctl) })
	t.Run("CancelledLastAttemptIsDropped", func(t *testing.T) { testCancelledLastAttempt(t, ctl) })
	t.Run("Results", func(t *testing.T) { testResults(t, ctl) })
}

// lockedBuffer is a log sink for a test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testQueuesOnEveryMaster runs one queue per master, through every path
// that touches Redis (plain, batch, delayed and idempotent enqueues,
// retries, dead letters, Requeue, Purge, a dead consumer's sweep), in one
// process sharing one heartbeat: nothing fails, CROSSSLOT or otherwise.
func testQueuesOnEveryMaster(t *testing.T, c *redistest.RedisCluster, np newPoolFunc) {
	ctx := context.Background()
	names := c.OnEveryMaster(func(i int) string { return fmt.Sprint("spread", i) }, func(n string) string { return newKeys("bq", n).ready })
	p := np(t, pool.Config{})
	before, err := c.CommandStats(ctx)
	require.NoError(t, err)
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g := group(t)

	const plain, batch, delayed, unique, flaky, doomed = 100, 50, 10, 5, 5, 3
	const perQueue = plain + batch + delayed + unique + flaky + doomed
	type queueRun struct {
		q    *Queue
		w    *Worker
		mu   sync.Mutex
		runs map[string]int
	}
	runs := make([]*queueRun, len(names))
	for i, name := range names {
		r := &queueRun{q: mustQueue(t, p, name, Config{Logger: log}), runs: map[string]int{}}
		runs[i] = r
		// A consumer that died holding two jobs of this queue.
		ghost := fmt.Sprint("ghost-", i)
		for _, id := range []string{"g1", "g2"} {
			env := envelope{id: ghost + id, maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("ok")}
			require.NoError(t, p.Client().LPush(ctx, r.q.k.proc(ghost), env.encode()).Err())
		}
		require.NoError(t, p.Client().SAdd(ctx, r.q.k.consumers, ghost).Err())
		r.w = startWorker(t, g, r.q, func(ctx context.Context, j *Job) error {
			r.mu.Lock()
			r.runs[j.ID]++
			r.mu.Unlock()
			switch {
			case bytes.HasPrefix(j.Payload, []byte("flaky")) && j.Attempt < 3:
				return errors.New("not yet")
			case bytes.HasPrefix(j.Payload, []byte("doomed")):
				return Permanent(errors.New("never"))
			}
			return nil
		}, WorkerConfig{Concurrency: 4, Logger: log,
			Backoff: func(int, error) time.Duration { return 10 * time.Millisecond },
		}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
	}

	for _, r := range runs {
		for i := range plain {
			_, err := r.q.Enqueue(ctx, []byte(fmt.Sprint("plain", i)))
			require.NoError(t, err)
		}
		payloads := make([][]byte, batch)
		for i := range payloads {
			payloads[i] = []byte(fmt.Sprint("batch", i))
		}
		// Payloads kept apart (over 4 KiB), in the plain and the delayed batch.
		payloads[0] = append(payloads[0], make([]byte, 5000)...)
		_, err := r.q.EnqueueBatch(ctx, payloads)
		require.NoError(t, err)
		_, err = r.q.EnqueueBatch(ctx, payloads[:delayed], Delay(30*time.Millisecond))
		require.NoError(t, err)
		for i := range unique {
			_, err := r.q.Enqueue(ctx, []byte("unique"), ID(fmt.Sprint("order-", i)), Delay(time.Duration(i)*10*time.Millisecond))
			require.NoError(t, err)
			_, err = r.q.Enqueue(ctx, []byte("unique"), ID(fmt.Sprint("order-", i)))
			require.ErrorIs(t, err, ErrDuplicate)
		}
		for i := range flaky {
			_, err := r.q.Enqueue(ctx, []byte(fmt.Sprint("flaky", i)), MaxAttempts(3))
			require.NoError(t, err)
		}
		for i := range doomed {
			// Kept apart: dead letters, Requeue and Purge with payload refs.
			_, err := r.q.Enqueue(ctx, append([]byte(fmt.Sprint("doomed", i)), make([]byte, 5000)...))
			require.NoError(t, err)
		}
	}

	for _, r := range runs {
		testutil.Eventually(t, 30*time.Second, "every job of "+r.q.Name(), func() bool {
			s := r.w.Stats()
			return s.Processed == perQueue-doomed+2 && s.Dead == doomed && s.InFlight == 0
		})
		r.mu.Lock()
		require.Len(t, r.runs, perQueue+2, "every job ran, the dead consumer's two included")
		for id, n := range r.runs {
			if strings.HasPrefix(id, "order-") || n == 1 {
				continue
			}
			require.Equal(t, 3, n, "only the flaky jobs ran more than once: %s", id)
		}
		r.mu.Unlock()
		s, err := r.q.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, Stats{Dead: doomed, Consumers: 1, Local: s.Local}, s, r.q.Name())
		ws := s.Local
		require.Zero(t, ws.AckErrors)
		require.Zero(t, ws.FetchErrors)
		require.Equal(t, uint64(2), ws.Recovered)

		dead, err := r.q.Dead(ctx, 0, 10)
		require.NoError(t, err)
		require.Len(t, dead, doomed)
		n, err := r.q.Requeue(ctx, dead[0].ID)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		testutil.Eventually(t, 10*time.Second, "the requeued job died again", func() bool { return r.w.Stats().Dead == doomed+1 })
		n, err = r.q.Purge(ctx)
		require.NoError(t, err)
		require.Equal(t, doomed, n)
	}

	// Every master did its share of the work.
	for _, name := range names {
		m, err := c.MasterOf(ctx, newKeys("bq", name).ready)
		require.NoError(t, err)
		st, err := m.CommandStats(ctx)
		require.NoError(t, err)
		require.Positive(t, st["blmove"]+st["evalsha"], "%s on %s", name, m.Addr())
	}
	after, err := c.CommandStats(ctx)
	require.NoError(t, err)
	require.Greater(t, after["evalsha"], before["evalsha"])
	require.NotContains(t, logs.String(), "CROSSSLOT")
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		require.Contains(t, line, "job sent to the dead letters", "the only warnings are the doomed jobs'")
	}
}

// TestClusterFailover fails over every master in turn (CLUSTER FAILOVER on
// its replica: the master stops taking writes until the replica has caught
// up, so Redis itself loses nothing) while a producer enqueues and a worker
// per queue consumes, one queue per master. Callers see MOVED once per moved
// slot and retry; the workers go on by themselves. Every job runs, and no
// processing list or dead letter is left.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("fails over three masters: ~10s")
	}
	c := redistest.ClusterWith(t, redistest.ClusterOptions{ReplicasPerMaster: 1})
	ctx := context.Background()
	names := c.OnEveryMaster(func(i int) string { return fmt.Sprint("fo", i) }, func(n string) string { return newKeys("bq", n).ready })
	p := mustPool(t, pool.Config{Addrs: c.Addrs(), ClusterMode: true, ProbeInterval: 20 * time.Millisecond})
	g := group(t)
	type queueRun struct {
		q    *Queue
		w    *Worker
		seen *payloadSet
	}
	runs := make([]*queueRun, len(names))
	for i, name := range names {
		r := &queueRun{q: mustQueue(t, p, name, Config{}), seen: newPayloadSet()}
		r.w = startWorker(t, g, r.q, func(ctx context.Context, j *Job) error {
			time.Sleep(time.Millisecond) // the work
			r.seen.add(j.Payload)
			return nil
		}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second}, ConsumerConfig{HeartbeatInterval: 200 * time.Millisecond})
		runs[i] = r
	}
	st := noteSteady(g)

	// The producer: batches of 10 per queue until the failovers are done,
	// each retried until Redis takes it (a MOVED, or the pool failing fast,
	// means nothing was written).
	stop, produced := make(chan struct{}), make(chan int)
	var enqueueErrs []string
	go func() {
		b := 0
		defer func() { produced <- b }()
		for ; ; b += 10 {
			select {
			case <-stop:
				return
			default:
			}
			for _, r := range runs {
				payloads := make([][]byte, 10)
				for i := range payloads {
					payloads[i] = fmt.Append(nil, b+i)
				}
				for {
					_, err := r.q.EnqueueBatch(ctx, payloads)
					if err == nil {
						break
					}
					enqueueErrs = append(enqueueErrs, err.Error())
					time.Sleep(5 * time.Millisecond) // a producer's retry pace
				}
			}
			time.Sleep(2 * time.Millisecond) // a steady stream, not a flood
		}
	}()
	done := func() int {
		n := 0
		for _, r := range runs {
			n += r.seen.len()
		}
		return n
	}

	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	for _, m := range masters {
		before := done()
		testutil.Eventually(t, 20*time.Second, "jobs flowing before the failover", func() bool { return done() > before+300 })
		replicas, err := c.Replicas(ctx, m.Addr())
		require.NoError(t, err)
		require.Len(t, replicas, 1)
		c.Failover(ctx, replicas[0])
	}
	before := done()
	testutil.Eventually(t, 20*time.Second, "jobs flowing after the failovers", func() bool { return done() > before+300 })
	close(stop)
	perQueue := recv(t, produced, 30*time.Second, "the producer to stop")
	for _, r := range runs {
		testutil.Eventually(t, 30*time.Second, "every job of "+r.q.Name(), func() bool { return r.seen.len() == perQueue })
		testutil.Eventually(t, 10*time.Second, "acked", func() bool { return r.w.Stats().InFlight == 0 })
	}
	for _, r := range runs {
		// The request lane has not touched this slot since its master moved:
		// its first call may get the MOVED (the pool never re-sends a
		// command), and the next goes to the new master.
		var s Stats
		testutil.Eventually(t, 5*time.Second, "stats", func() bool {
			var err error
			s, err = r.q.Stats(ctx)
			if err != nil {
				require.ErrorContains(t, err, "MOVED")
			}
			return err == nil
		})
		require.Zero(t, s.Ready+s.InFlight+s.Delayed+s.Dead, "%s: %+v", r.q.Name(), s)
		dup := 0
		r.seen.mu.Lock()
		for _, n := range r.seen.seen {
			dup += n - 1
		}
		r.seen.mu.Unlock()
		ws := r.w.Stats()
		t.Logf("%s: %d jobs, %d ran twice, fetch errors %d, ack errors %d, lost leases %d", r.q.Name(), perQueue, dup, ws.FetchErrors, ws.AckErrors, ws.LostLeases)
	}
	seenMoved := 0
	for _, e := range enqueueErrs {
		if strings.Contains(e, "MOVED") {
			seenMoved++
		}
	}
	t.Logf("3 failovers: %d enqueues refused and retried (%d MOVED)", len(enqueueErrs), seenMoved)
	st.check(t, g)
}
