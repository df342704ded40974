package queue

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// The chaos test runs worker processes (this test binary, re-executed) on
// one real redis-server, SIGKILLs them at random moments, starts
// replacements, and checks that nothing was lost.
const (
	chaosJobs        = 20_000
	chaosWorkers     = 4
	chaosConcurrency = 8
	chaosMaxKills    = 10
	chaosQueue       = "chaos"
	chaosRuns        = "chaos:runs" // hash: job ID -> completed executions
	// A short heartbeat, so a killed worker's jobs are back within
	// chaosTTL + chaosInterval (1.5s) and the test takes seconds; the TTL is
	// 4 intervals so a live worker slowed down by the race detector on a
	// busy machine is not taken for dead.
	chaosInterval = 300 * time.Millisecond
	chaosTTL      = 1200 * time.Millisecond

	chaosEnvAddr     = "BOUNDED_CHAOS_REDIS"
	chaosEnvConsumer = "BOUNDED_CHAOS_CONSUMER"
)

// TestChaosWorkerProcess is the worker process of TestChaos: it consumes
// the chaos queue until its stdin closes, then drains and exits. Each
// completed run adds one to the job's count in a hash, so the parent counts
// executions per job. Outside TestChaos it skips.
func TestChaosWorkerProcess(t *testing.T) {
	addr := os.Getenv(chaosEnvAddr)
	if addr == "" {
		t.Skip("a worker process of TestChaos; runs only when TestChaos starts it")
	}
	p := mustPool(t, pool.Config{Addrs: []string{addr}})
	q := mustQueue(t, p, chaosQueue, Config{})
	g := lifecycle.New()
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		// The work: 10-30ms. Kills land mid-run as often as between runs.
		time.Sleep(time.Duration(10+rand.IntN(20)) * time.Millisecond)
		return p.Client().HIncrBy(ctx, chaosRuns, j.ID, 1).Err()
	}, WorkerConfig{
		Concurrency:  chaosConcurrency,
		BlockTimeout: time.Second,
	}, ConsumerConfig{
		ConsumerID:        os.Getenv(chaosEnvConsumer),
		HeartbeatInterval: chaosInterval,
		HeartbeatTTL:      chaosTTL,
	})
	fmt.Println("started")
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
	s := w.Stats()
	fmt.Printf("stopped: processed %d, recovered %d, lost leases %d, fetch errors %d, ack errors %d\n",
		s.Processed, s.Recovered, s.LostLeases, s.FetchErrors, s.AckErrors)
}

// chaosProc is one worker process.
type chaosProc struct {
	id     string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *lockedBuffer
	exited chan error
}

func startChaosProc(t *testing.T, addr, id string) *chaosProc {
	t.Helper()
	return startWorkerProcess(t, "TestChaosWorkerProcess", id, chaosEnvAddr+"="+addr, chaosEnvConsumer+"="+id)
}

// startWorkerProcess starts this test binary again running only the test
// named run, with env added to its environment: a worker process that the
// parent can SIGKILL.
func startWorkerProcess(t *testing.T, run, id string, env ...string) *chaosProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+run+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// If this test process dies, the kernel kills its workers too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	pr := &chaosProc{id: id, cmd: cmd, stdin: stdin, out: out, exited: make(chan error, 1)}
	go func() { pr.exited <- cmd.Wait() }() // ends when the process does; collected by awaitExit
	return pr
}

// kill is one SIGKILL and what it cost.
type kill struct {
	consumer string
	at       time.Time
	inFlight int64         // jobs in the killed consumer's processing list
	recovery time.Duration // until that list was empty again
}

// TestChaos: several worker processes share a queue of 20,000 jobs; every
// 1-2s one of them is SIGKILLed at a random moment and a new one started.
// At the end every job ran at least once, no processing list holds
// anything, nothing is in the dead letters, and the duplicate runs are at
// most the jobs the killed workers held.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: takes ~20s")
	}
	srv := redistest.ServerWith(t, redistest.Options{AppendOnly: true})
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, chaosQueue, Config{})
	c := p.Client()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 42))
	t.Logf("seed %d", seed)

	var ids []string
	for len(ids) < chaosJobs {
		payloads := make([][]byte, 5000)
		for i := range payloads {
			payloads[i] = strconv.AppendInt(nil, int64(len(ids)+i), 10)
		}
		// Every other batch in a partition of its own: killed workers
		// hold both kinds, and the sweep puts each back where it was.
		var opts []EnqueueOption
		if b := len(ids) / len(payloads); b%2 == 1 {
			opts = append(opts, Partition(fmt.Sprint("tenant", b)))
		}
		got, err := q.EnqueueBatch(ctx, payloads, opts...)
		require.NoError(t, err)
		ids = append(ids, got...)
	}

	var procs []*chaosProc
	next := 0
	spawn := func() {
		procs = append(procs, startChaosProc(t, srv.Addr(), fmt.Sprint("chaos-", next)))
		next++
	}
	t.Cleanup(func() { // a failed test leaves no process behind
		for _, pr := range procs {
			_ = pr.cmd.Process.Kill()
			pr.awaitExit(t)
		}
	})
	for range chaosWorkers {
		spawn()
	}
	runs := func() int64 {
		n, err := c.HLen(ctx, chaosRuns).Result()
		require.NoError(t, err)
		return n
	}

	var kills []*kill
	var measured sync.WaitGroup
	t.Cleanup(measured.Wait) // before the pool closes
	begin := time.Now()
	for len(kills) < chaosMaxKills && runs() < chaosJobs*9/10 {
		pause := time.Duration(1000+rng.IntN(1000)) * time.Millisecond
		time.Sleep(pause) // the chaos schedule, not a wait for a condition
		for _, pr := range procs {
			select {
			case err := <-pr.exited:
				t.Fatalf("worker %s exited on its own: %v\n%s", pr.id, err, pr.out)
			default:
			}
		}
		i := rng.IntN(len(procs))
		victim := procs[i]
		procs = slices.Delete(procs, i, i+1)
		require.NoError(t, victim.cmd.Process.Kill())
		victim.awaitExit(t)
		k := &kill{consumer: victim.id, at: time.Now()}
		var err error
		k.inFlight, err = c.LLen(ctx, q.k.proc(victim.id)).Result()
		require.NoError(t, err)
		kills = append(kills, k)
		measured.Go(func() {
			// Polls one key every 5ms for a few seconds: the measurement.
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				n, err := c.LLen(ctx, q.k.proc(k.consumer)).Result()
				if err != nil {
					break
				}
				if n == 0 {
					k.recovery = time.Since(k.at)
					return
				}
			}
			k.recovery = -1
		})
		spawn()
	}

	testutil.Eventually(t, 90*time.Second, "every job run, every processing list empty, every killed consumer forgotten", func() bool {
		if runs() < chaosJobs {
			return false
		}
		s, err := q.Stats(ctx)
		require.NoError(t, err)
		if s.Ready != 0 || s.Delayed != 0 || s.InFlight != 0 {
			return false
		}
		// The consumers are exactly the live workers: every killed one was
		// swept (and every replacement has joined).
		members, err := c.SMembers(ctx, q.k.consumers).Result()
		require.NoError(t, err)
		live := make([]string, len(procs))
		for i, pr := range procs {
			live[i] = pr.id
		}
		slices.Sort(members)
		slices.Sort(live)
		return slices.Equal(members, live)
	})
	elapsed := time.Since(begin)
	measured.Wait()

	// Stop the survivors cleanly: they drain and exit 0.
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
		t.Logf("%s %s", pr.id, lastLine(pr.out.String()))
	}
	procs = nil

	// Every job ran; count the runs beyond the first.
	counts, err := c.HGetAll(ctx, chaosRuns).Result()
	require.NoError(t, err)
	lost, duplicates := 0, 0
	for _, id := range ids {
		n, _ := strconv.Atoi(counts[id])
		if n == 0 {
			lost++
		}
		duplicates += max(n-1, 0)
	}
	require.Equal(t, chaosJobs-lost, len(counts), "runs of jobs that were never enqueued")

	var inFlight int64
	var recoveries []time.Duration
	for _, k := range kills {
		inFlight += k.inFlight
		require.NotEqual(t, time.Duration(-1), k.recovery, "the jobs of %s were never recovered", k.consumer)
		if k.inFlight > 0 {
			recoveries = append(recoveries, k.recovery)
		}
	}
	slices.Sort(recoveries)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	procKeys, err := c.Keys(ctx, q.k.proc("*")).Result()
	require.NoError(t, err)

	t.Logf("%d jobs, %d workers x %d handlers, %d kills in %s: lost %d, duplicate runs %d (jobs held by killed workers: %d; bound by concurrency: %d)",
		chaosJobs, chaosWorkers, chaosConcurrency, len(kills), elapsed.Round(time.Millisecond), lost, duplicates, inFlight, len(kills)*chaosConcurrency)
	if len(recoveries) > 0 {
		t.Logf("recovery after a kill (until the killed worker's jobs were back in ready): p50 %s, max %s over %d kills; HeartbeatTTL+HeartbeatInterval = %s here, %s with the defaults",
			recoveries[len(recoveries)/2].Round(time.Millisecond), recoveries[len(recoveries)-1].Round(time.Millisecond), len(recoveries),
			chaosTTL+chaosInterval, 2*DefaultHeartbeatInterval+DefaultHeartbeatInterval)
	}

	require.Zero(t, lost, "jobs lost")
	require.LessOrEqual(t, int64(duplicates), inFlight, "duplicates beyond the jobs the killed workers held")
	require.Zero(t, s.Dead, "dead letters")
	require.Zero(t, s.Ready)
	require.Zero(t, s.InFlight)
	require.Empty(t, procKeys, "processing lists left")
	require.NotEmpty(t, kills)
	require.Zero(t, s.Consumers, "the survivors left, the killed were swept")
	require.Zero(t, s.Partitions, "no partition left with a count")
}

func lastLine(s string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if line := sc.Text(); len(line) > 0 && line[0] != '-' && line[0] != '=' && line != "PASS" {
			last = line
		}
	}
	return last
}

// awaitExit waits for a killed worker process to be reaped, for at most 30
// s: a kill that does not end it is a failure, not a hang.
func (pr *chaosProc) awaitExit(t testing.TB) {
	t.Helper()
	select {
	case <-pr.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("worker %s did not exit within 30s of SIGKILL", pr.id)
	}
}
