package queue

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
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

// The concurrency-limit test: limitKillProcs processes x
// limitKillHandlers handlers, a limit of limitKillN on one queue.
const (
	limitKillProcs    = 4
	limitKillHandlers = 10
	limitKillN        = 3
	limitKillQueue    = "limkill"
	limitKillRunning  = "limkill:running" // set: <consumer>/<job ID> of every handler running now
	limitKillMax      = "limkill:max"     // the most members running ever had
	limitKillEnv      = "BOUNDED_LIMITKILL_REDIS"
	limitKillEnvID    = "BOUNDED_LIMITKILL_CONSUMER"
	limitKillEnvMode  = "BOUNDED_LIMITKILL_MODE" // "queue" or "partition"
	limitKillPart     = "p1"                     // the partition of every job in "partition" mode
)

// limitKillLimit is the limit of a mode of TestLimitKill.
func limitKillLimit(mode string) Limit {
	if mode == "partition" {
		return Limit{PartitionConcurrency: limitKillN}
	}
	return Limit{Concurrency: limitKillN}
}

// limitKillStartScript adds a running handler and records the most ever
// running, atomically: the check of "never more than N" in flight.
var limitKillStartScript = redis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
`)

// TestLimitKillProcess is a worker process of TestLimitKill; elsewhere it
// skips.
func TestLimitKillProcess(t *testing.T) {
	addr := os.Getenv(limitKillEnv)
	if addr == "" {
		t.Skip("a worker process of TestLimitKill; runs only when TestLimitKill starts it")
	}
	id := os.Getenv(limitKillEnvID)
	p := mustPool(t, pool.Config{Addrs: []string{addr}})
	q := mustQueue(t, p, limitKillQueue, Config{})
	g := lifecycle.New()
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		c := p.Client()
		m := id + "/" + j.ID
		if err := limitKillStartScript.Run(ctx, c, []string{limitKillRunning, limitKillMax}, m).Err(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond) // the work
		return c.SRem(context.WithoutCancel(ctx), limitKillRunning, m).Err()
	}, WorkerConfig{
		Concurrency:  limitKillHandlers,
		BlockTimeout: time.Second,
		Limit:        limitKillLimit(os.Getenv(limitKillEnvMode)),
	}, ConsumerConfig{
		ConsumerID:        id,
		HeartbeatInterval: chaosInterval,
		HeartbeatTTL:      chaosTTL,
	})
	fmt.Println("started")
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
}

// TestLimitKill: 4 processes x 10 handlers consume a queue limited to 3
// in flight (subtest "queue"), or whose jobs are all in one partition
// limited to 3 in flight (subtest "partition"). The handlers record every start and end in Redis (the most
// ever running at once is kept atomically) and the slots are sampled every
// ms: never more than 3. A process holding slots is SIGKILLed: its slots
// come back with the sweep of its consumer, within the recovery bound
// (HeartbeatTTL + HeartbeatInterval), and 3 jobs run at once again. The
// survivors drain: no slot is left.
func TestLimitKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 processes")
	}
	for _, mode := range []string{"queue", "partition"} {
		t.Run(mode, func(t *testing.T) { testLimitKill(t, mode) })
	}
}

func testLimitKill(t *testing.T, mode string) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, limitKillQueue, Config{})
	c := p.Client()
	ctx := context.Background()
	payloads := make([][]byte, 3000)
	for i := range payloads {
		payloads[i] = []byte("x")
	}
	var opts []EnqueueOption
	if mode == "partition" {
		opts = append(opts, Partition(limitKillPart))
	}
	_, err := q.EnqueueBatch(ctx, payloads, opts...)
	require.NoError(t, err)

	var procs []*chaosProc
	t.Cleanup(func() { // a failed test leaves no process behind
		for _, pr := range procs {
			_ = pr.cmd.Process.Kill()
			pr.awaitExit(t)
		}
	})
	for i := range limitKillProcs {
		id := fmt.Sprint("lk-", i)
		procs = append(procs, startWorkerProcess(t, "TestLimitKillProcess", id, limitKillEnv+"="+srv.Addr(), limitKillEnvID+"="+id, limitKillEnvMode+"="+mode))
	}

	// The sampler: the slots in Redis, every ms.
	smp := sampleInFlight(ctx, q)
	defer smp.stop()

	runningOf := func(id string) []string {
		ms, err := c.SMembers(ctx, limitKillRunning).Result()
		require.NoError(t, err)
		var out []string
		for _, m := range ms {
			if id == "" || strings.HasPrefix(m, id+"/") {
				out = append(out, m)
			}
		}
		return out
	}
	// The victim: the first process seen running a job.
	var victim *chaosProc
	testutil.Eventually(t, 30*time.Second, "a process running jobs", func() bool {
		for _, pr := range procs {
			if len(runningOf(pr.id)) > 0 {
				victim = pr
				return true
			}
		}
		return false
	})
	require.NoError(t, victim.cmd.Process.Kill())
	killed := time.Now()
	victim.awaitExit(t)
	for i, pr := range procs {
		if pr == victim {
			procs = append(procs[:i], procs[i+1:]...)
			break
		}
	}
	// Its handlers died with it: they run no more.
	if ms := runningOf(victim.id); len(ms) > 0 {
		require.NoError(t, c.SRem(ctx, limitKillRunning, toAny(ms)...).Err())
	}
	held := func(id string) int {
		ms, err := c.ZRange(ctx, q.k.limitHeld(), 0, -1).Result()
		require.NoError(t, err)
		n := 0
		for _, m := range ms {
			if strings.HasPrefix(m, id+"\x00") {
				n++
			}
		}
		return n
	}
	t.Logf("the victim %s held %d slots when it was killed", victim.id, held(victim.id))
	bound := chaosTTL + chaosInterval
	testutil.Eventually(t, bound+10*time.Second, "the victim's slots given back", func() bool { return held(victim.id) == 0 })
	recovered := time.Since(killed)
	testutil.Eventually(t, 10*time.Second, "3 jobs running at once again", func() bool { return len(runningOf("")) == limitKillN })
	full := time.Since(killed)
	t.Logf("slots back %s after the SIGKILL, 3 running again after %s (recovery bound %s)", recovered.Round(time.Millisecond), full.Round(time.Millisecond), bound)
	require.Less(t, recovered, bound+5*time.Second, "within the recovery bound (with slack for a loaded machine)")

	for _, pr := range procs {
		require.NoError(t, pr.stdin.Close())
	}
	for _, pr := range procs {
		select {
		case err := <-pr.exited:
			require.NoError(t, err, "worker %s:\n%s", pr.id, pr.out)
		case <-time.After(30 * time.Second):
			t.Fatalf("worker %s did not stop:\n%s", pr.id, pr.out)
		}
	}
	procs = nil
	mx, err := c.Get(ctx, limitKillMax).Int64()
	require.NoError(t, err)
	t.Logf("most running at once %d; slots sampled %d times, at most %d", mx, smp.samples.Load(), smp.most.Load())
	require.LessOrEqual(t, smp.most.Load(), int64(limitKillN))
	require.Equal(t, int64(limitKillN), mx, "never more than the limit running, and the limit reached")
	n, err := q.LimitInFlight(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "the drained survivors left no slot")
	parts, err := c.HLen(ctx, q.k.limitPart()).Result()
	require.NoError(t, err)
	require.Zero(t, parts, "no partition counted")
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// inFlightSampler reads a queue's fleet-wide slots in Redis
// (Queue.LimitInFlight) every ms until stop: the most it saw, and how many
// samples it took.
type inFlightSampler struct {
	most, samples atomic.Int64
	done          chan struct{}
	wg            sync.WaitGroup
}

func sampleInFlight(ctx context.Context, q *Queue) *inFlightSampler {
	s := &inFlightSampler{done: make(chan struct{})}
	s.wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
			n, err := q.LimitInFlight(ctx)
			if err != nil {
				continue
			}
			s.samples.Add(1)
			if n > s.most.Load() {
				s.most.Store(n)
			}
		}
	})
	return s
}

// stop ends the sampling and waits for the sampler; once is enough.
func (s *inFlightSampler) stop() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
}
