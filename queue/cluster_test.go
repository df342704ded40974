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
		}, WorkerConfig{Concurrency: 4, HeartbeatInterval: 100 * time.Millisecond, Logger: log,
			Backoff: func(int, error) time.Duration { return 10 * time.Millisecond }})
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
			_, err := r.q.Enqueue(ctx, []byte(fmt.Sprint("doomed", i)))
			require.NoError(t, err)
		}
	}

	for _, r := range runs {
		eventually(t, 30*time.Second, "every job of "+r.q.Name(), func() bool {
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
		eventually(t, 10*time.Second, "the requeued job died again", func() bool { return r.w.Stats().Dead == doomed+1 })
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
