package queue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// An operator's Inspector.Pause of a name the namespace never used (a typo)
// must say so, not answer nil and list a new, paused, queue that nothing
// will ever enqueue to while the queue meant keeps running.
func TestInspectorPauseOfUnknownQueue(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "emails", Config{})
	_, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	in, err := NewInspector(p, "")
	require.NoError(t, err)

	err = in.Pause(ctx, "emials")
	require.ErrorIs(t, err, ErrUnknownQueue)
	require.ErrorContains(t, err, `"emials"`, "the error names the queue")
	page, err := in.Queues(ctx, "", 100)
	require.NoError(t, err)
	for _, qi := range page.Queues {
		require.NotEqual(t, "emials", qi.Name, "a refused pause registered the name")
	}
	paused, err := mustQueue(t, p, "emials", Config{}).Paused(ctx)
	require.NoError(t, err)
	require.False(t, paused)

	// A queue the namespace knows pauses; a paused one resumes even if the
	// registry forgot it (Resume never refuses).
	require.NoError(t, in.Pause(ctx, "emails"))
	paused, err = q.Paused(ctx)
	require.NoError(t, err)
	require.True(t, paused)
	require.NoError(t, in.Resume(ctx, "emails"))
	paused, err = q.Paused(ctx)
	require.NoError(t, err)
	require.False(t, paused)
}

// keySlot agrees with the server's CLUSTER KEYSLOT on the keys the package
// builds (queue tags, namespace-only tags, a hub's wakeup key) and on
// random keys full of braces, empty tags and non-ASCII bytes.
func TestKeySlotMatchesClusterKeyslot(t *testing.T) {
	c := redistest.Cluster(t)
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: c.Addrs()[0]})
	defer func() { require.NoError(t, rc.Close()) }()

	var ks []string
	for i := range 200 {
		k := newKeys(fmt.Sprint("ns", i%7), fmt.Sprintf("q-%d.é/%d", i, i*31))
		ks = append(ks, k.ready, k.bell, k.paused, k.proc("c1"), k.tag+":hub:node-1",
			heartbeatKey(fmt.Sprint("ns", i)), queuesKey(fmt.Sprint("ns", i)))
	}
	ks = append(ks, "", "{", "}", "{}", "}{", "{}{}", "{{}}", "{a}{b}", "x{}{a}", "{{a}", "a{b", "a}b{c}", "\xff{\x00}")
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("{}ab:\x00\xff")
	for range 2000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		ks = append(ks, string(b))
	}
	pipe := rc.Pipeline()
	cmds := make([]*redis.IntCmd, len(ks))
	for i, k := range ks {
		cmds[i] = pipe.ClusterKeySlot(ctx, k)
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	for i, k := range ks {
		require.Equal(t, int(cmds[i].Val()), keySlot(k), "key %q", k)
	}
}

// The docs promise that promotions of delayed jobs go on while a queue is
// paused. A delayed job enqueued during the pause, due before anything the
// scheduler waits for, wakes the scheduler with a wake marker on the ready
// list, which only a take delivers: the take of a paused queue handed out
// nothing, markers included, so the job stayed delayed (past its due time)
// until Resume.
func TestPausedQueuePromotesDelayedJobs(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	// The producer is another process: it cannot tell the worker's
	// scheduler in memory (Queue.notifyDelayed).
	op := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	q := mustQueue(t, p, "pausedpromote", Config{})
	oq := mustQueue(t, op, "pausedpromote", Config{})
	ran := make(chan string, 4)
	g := group(t)
	startWorker(t, g, q, func(_ context.Context, j *Job) error { ran <- string(j.Payload); return nil },
		WorkerConfig{Concurrency: 2, BlockTimeout: time.Minute})
	_, err := q.Enqueue(ctx, []byte("before"))
	require.NoError(t, err)
	require.Equal(t, "before", recv(t, ran, 10*time.Second, "a job before the pause"))

	require.NoError(t, q.Pause(ctx))
	_, err = oq.Enqueue(ctx, []byte("delayed"), Delay(100*time.Millisecond))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "the delayed job promoted to the ready list while paused", func() bool {
		st, err := q.Stats(ctx)
		return err == nil && st.Ready == 1 && st.Delayed == 0
	})
	select {
	case j := <-ran:
		t.Fatalf("job %q ran while the queue was paused", j)
	default:
	}
	require.NoError(t, q.Resume(ctx))
	require.Equal(t, "delayed", recv(t, ran, 10*time.Second, "the job, after Resume"))
}

// Resume of a name that holds no jobs (a typo, or a queue never used)
// writes nothing: it rang a doorbell for an empty list, a key no consumer
// watches and nothing ever deletes.
func TestResumeOfAnEmptyQueueLeavesNoKey(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	require.NoError(t, in.Resume(ctx, "nosuchqueue"))
	q := mustQueue(t, p, "nosuchqueue", Config{})
	n, err := p.Client().Exists(ctx, q.k.bell, q.k.paused).Result()
	require.NoError(t, err)
	require.Zero(t, n, "Resume of an empty queue left a key")
}

// Stats says a queue is paused: a paused queue's ready jobs wait and its
// OldestReady grows, which Stats alone showed as a stuck queue.
func TestStatsReportsPaused(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "statspaused", Config{})
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	require.False(t, st.Paused)
	require.NoError(t, q.Pause(ctx))
	st, err = q.Stats(ctx)
	require.NoError(t, err)
	require.True(t, st.Paused)
	require.NoError(t, q.Resume(ctx))
	st, err = q.Stats(ctx)
	require.NoError(t, err)
	require.False(t, st.Paused)
}
