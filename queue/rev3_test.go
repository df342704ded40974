package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// A process restarted under a stable ConsumerID no longer runs a worker on
// a queue it consumed in its previous life (a configuration change, a queue
// moved to another deployment). Its heartbeat is alive, so the jobs its
// previous life held on that queue must still be recovered by the
// processes that do consume it: before, sweeps saw a live heartbeat and
// left them in the processing list for as long as the process lived.
func TestPreviousLifeOnAQueueNoLongerConsumedIsRecovered(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			ctx := context.Background()
			c := p.Client()
			moved := mustQueue(t, p, "moved", Config{})
			kept := mustQueue(t, p, "kept", Config{})
			// pod-0's previous life held a job of "moved", and crashed.
			env := envelope{id: "stranded", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("x")}
			require.NoError(t, c.LPush(ctx, moved.k.proc("pod-0"), env.encode()).Err())
			require.NoError(t, c.SAdd(ctx, moved.k.consumers, "pod-0").Err())
			require.NoError(t, c.HSet(ctx, moved.k.incarnations, "pod-0", "previous-life").Err())

			// pod-0 is back, consuming only "kept".
			startWorker(t, group(t), kept, func(context.Context, *Job) error { return nil },
				WorkerConfig{}, ConsumerConfig{ConsumerID: "pod-0", HeartbeatInterval: 100 * time.Millisecond})
			// Another process consumes "moved".
			ran := make(chan string, 1)
			startWorker(t, group(t), moved, func(_ context.Context, j *Job) error { ran <- j.ID; return nil },
				WorkerConfig{}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
			select {
			case id := <-ran:
				require.Equal(t, "stranded", id)
			case <-time.After(5 * time.Second):
				n, _ := c.LLen(ctx, moved.k.proc("pod-0")).Result()
				t.Fatalf("the job pod-0's previous life held on a queue it no longer consumes was never recovered (%d still in its processing list)", n)
			}
		})
	}
}

// With more dead consumers than one page (the sweeper reads an older page
// first) and a Redis slower than HeartbeatInterval, a newer view always
// arrived while the older page was read, and the sweeper gave up each view
// before sweeping anyone: nothing was ever recovered. Each view now sweeps
// at least one dead consumer before it yields to a newer one.
func TestSlowSweepsOfManyDeadMakeProgress(t *testing.T) {
	const latency = 250 * time.Millisecond
	g, _, w, _ := slowSweepSetup(t, "slowpages", latency, deadPage+6,
		WorkerConfig{}, ConsumerConfig{HeartbeatInterval: MinHeartbeatInterval, HeartbeatTTL: 10 * time.Second})
	defer closeGroup(t, g)
	testutil.Eventually(t, 30*time.Second, "dead consumers' jobs recovered", func() bool { return w.Stats().Recovered >= 3 })
}
