package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// The second chaos test covers what the first one does not: a slow Redis
// (every background command of the workers answers late), delayed jobs and
// retries going through the delayed set, processes restarted with their
// stable ConsumerID at any moment of their sweep, dead consumers appearing
// several at a time, and a scale-down at the end. It would have shown a
// heartbeat starved by sweeps (a live process's jobs swept and run twice),
// a sweep taking jobs from a restarted consumer, and a delayed job orphaned
// by a scheduler that stopped (nothing left to promote it).
const (
	slowChaosQueue    = "slowchaos"
	slowChaosRuns     = "slowchaos:runs" // hash: "<job ID>#<attempt>" -> executions
	slowChaosDone     = "slowchaos:done" // hash: job ID -> 1 once it succeeded
	slowChaosLatency  = 40 * time.Millisecond
	slowChaosWorkers  = 4
	slowChaosConc     = 4
	slowChaosPlain    = 1600
	slowChaosGhosts   = 16 // dead consumers appearing at once, each holding a job
	slowChaosEnvAddr  = "BOUNDED_SLOWCHAOS_REDIS"
	slowChaosEnvID    = "BOUNDED_SLOWCHAOS_CONSUMER"
	slowChaosFlakyPfx = "flaky"
)

// TestSlowChaosWorkerProcess is a worker process of TestChaosSlowRedis. Its
// background lane (heartbeat, sweeps, acks, scheduler) answers
// slowChaosLatency late. A job whose payload starts with "flaky" fails its
// first attempt and is retried through the delayed set.
func TestSlowChaosWorkerProcess(t *testing.T) {
	addr := os.Getenv(slowChaosEnvAddr)
	if addr == "" {
		t.Skip("a worker process of TestChaosSlowRedis; runs only when it starts it")
	}
	p := mustPool(t, pool.Config{Addrs: []string{addr}})
	p.Background().AddHook(slowHook{d: slowChaosLatency})
	q := mustQueue(t, p, slowChaosQueue, Config{})
	g := lifecycle.New()
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		// The work: 40-100ms, so that processes hold jobs whenever a sweep
		// runs.
		time.Sleep(time.Duration(40+rand.IntN(60)) * time.Millisecond)
		if err := p.Client().HIncrBy(ctx, slowChaosRuns, j.ID+"#"+strconv.Itoa(j.Attempt), 1).Err(); err != nil {
			return err
		}
		if strings.HasPrefix(string(j.Payload), slowChaosFlakyPfx) && j.Attempt == 1 {
			return errors.New("flaky: first attempt fails")
		}
		return p.Client().HSet(ctx, slowChaosDone, j.ID, 1).Err()
	}, WorkerConfig{
		Concurrency:   slowChaosConc,
		BlockTimeout:  time.Second,
		MaxDeliveries: 1000, // kills must not dead-letter anything here
		Backoff:       func(int, error) time.Duration { return time.Duration(100+rand.IntN(400)) * time.Millisecond },
	}, ConsumerConfig{
		ConsumerID:        os.Getenv(slowChaosEnvID),
		HeartbeatInterval: chaosInterval,
		HeartbeatTTL:      chaosTTL,
	})
	fmt.Println("started")
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
	s := w.Stats()
	fmt.Printf("stopped: processed %d, retried %d, recovered %d, lost leases %d\n", s.Processed, s.Retried, s.Recovered, s.LostLeases)
	if s.LostLeases > 0 {
		// A live, cleanly stopping process had jobs swept from under it.
		fmt.Println("LOST LEASES")
	}
}

func startSlowChaosProc(t *testing.T, addr, id string) *chaosProc {
	t.Helper()
	return startWorkerProcess(t, "TestSlowChaosWorkerProcess", id, slowChaosEnvAddr+"="+addr, slowChaosEnvID+"="+id)
}

// TestChaosSlowRedis: four worker processes with stable IDs share a backlog
// of plain and flaky jobs while delayed jobs keep arriving. For about 15s
// one of them is SIGKILLed every 0.7-1.5s and restarted with the same ID
// after 0-2.5s (before, during or after the others' sweep of it); every
// third kill, sixteen dead consumers holding jobs appear at once just as
// the killed one is seen dead, and it restarts while they are swept. Once
// the backlog is done, three times a lone delayed job is enqueued and all
// processes but one are stopped until well past its due time. At the end
// every job succeeded, no attempt of a job ran twice unless a killed
// process held it, and no job stayed in the delayed set more than
// BlockTimeout + 1s (+1.5s) past its due time.
func TestChaosSlowRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: takes ~50s")
	}
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, slowChaosQueue, Config{})
	c := p.Client()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("seed %d", seed)

	total := 0
	payloads := make([][]byte, slowChaosPlain)
	for i := range payloads {
		if i%5 == 0 {
			payloads[i] = []byte(fmt.Sprint(slowChaosFlakyPfx, i))
		} else {
			payloads[i] = []byte(fmt.Sprint("plain", i))
		}
	}
	_, err := q.EnqueueBatch(ctx, payloads)
	require.NoError(t, err)
	total += len(payloads)
	// overdue is the longest any job stayed in the delayed set past its due
	// time, as sampled while the schedule runs.
	var overdue time.Duration
	sampleOverdue := func() {
		z, err := c.ZRangeWithScores(ctx, q.k.delayed, 0, 0).Result()
		require.NoError(t, err)
		if len(z) > 0 {
			overdue = max(overdue, time.Since(time.UnixMilli(int64(z[0].Score))))
		}
	}
	delayed := func(d time.Duration) {
		_, err := q.Enqueue(ctx, []byte(fmt.Sprint("delayed", total)), Delay(d))
		require.NoError(t, err)
		total++
	}

	procs := map[string]*chaosProc{}
	t.Cleanup(func() { // a failed test leaves no process behind
		for _, pr := range procs {
			_ = pr.cmd.Process.Kill()
			pr.awaitExit(t)
		}
	})
	ids := make([]string, slowChaosWorkers)
	for i := range ids {
		ids[i] = fmt.Sprint("stable-", i)
		procs[ids[i]] = startSlowChaosProc(t, srv.Addr(), ids[i])
	}
	checkAlive := func() {
		for id, pr := range procs {
			select {
			case err := <-pr.exited:
				t.Fatalf("worker %s exited on its own: %v\n%s", id, err, pr.out)
			default:
			}
		}
	}
	// held counts, per "<job ID>#<attempt>", the times a killed process
	// held that attempt: each may have run it once more.
	held := map[string]int{}
	kill := func(id string) {
		pr := procs[id]
		delete(procs, id)
		require.NoError(t, pr.cmd.Process.Kill())
		pr.awaitExit(t)
		elems, err := c.LRange(ctx, q.k.proc(id), 0, -1).Result()
		require.NoError(t, err)
		for _, e := range elems {
			if env, err := decodeEnvelope([]byte(e)); err == nil {
				held[env.id+"#"+strconv.Itoa(env.attempt+1)]++
			}
		}
	}
	ghosts := 0
	addGhosts := func() {
		// Their deadlines are newer than a consumer killed a moment ago, so
		// a sweep reaches that one only after sweeping all of them.
		for range slowChaosGhosts {
			id := fmt.Sprint("ghost-", ghosts)
			ghosts++
			// A job taken from the ready list that its dead holder never ran.
			err := c.LMove(ctx, q.k.ready, q.k.proc(id), "RIGHT", "LEFT").Err()
			if errors.Is(err, redis.Nil) {
				continue
			}
			require.NoError(t, err)
			require.NoError(t, c.ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: float64(time.Now().UnixMilli()), Member: id}).Err())
			require.NoError(t, c.SAdd(ctx, q.k.consumers, id).Err())
		}
	}

	// Restarts due: consumer ID -> when; and when the next dead consumers
	// appear.
	restarts := map[string]time.Time{}
	var ghostsAt time.Time
	kills := 0
	begin := time.Now()
	for phase := time.Now(); time.Since(phase) < 15*time.Second; {
		pause := time.Duration(700+rng.IntN(800)) * time.Millisecond
		for end := time.Now().Add(pause); time.Now().Before(end); {
			// The chaos schedule, not a wait for a condition: delayed jobs
			// arrive every 100ms, restarts and dead consumers when due.
			time.Sleep(100 * time.Millisecond)
			delayed(time.Duration(300+rng.IntN(2500)) * time.Millisecond)
			sampleOverdue()
			for id, at := range restarts {
				if time.Now().After(at) {
					procs[id] = startSlowChaosProc(t, srv.Addr(), id)
					delete(restarts, id)
				}
			}
			if !ghostsAt.IsZero() && time.Now().After(ghostsAt) {
				addGhosts()
				ghostsAt = time.Time{}
			}
		}
		checkAlive()
		storm := kills%3 == 1 // a kill, then a crowd of dead consumers, then the restart
		var alive []string
		for id := range procs {
			alive = append(alive, id)
		}
		if len(alive) < 2 {
			continue
		}
		slices.Sort(alive)
		id := alive[rng.IntN(len(alive))]
		kill(id)
		kills++
		restarts[id] = time.Now().Add(time.Duration(rng.IntN(2500)) * time.Millisecond)
		if storm {
			// The killed one is seen dead (TTL 1.2s) with the crowd, and
			// restarts while the others sweep.
			ghostsAt = time.Now().Add(chaosTTL + 100*time.Millisecond)
			restarts[id] = ghostsAt.Add(time.Duration(300+rng.IntN(1700)) * time.Millisecond)
		}
	}
	for id := range restarts {
		procs[id] = startSlowChaosProc(t, srv.Addr(), id)
	}
	drained := func() bool {
		sampleOverdue()
		n, err := c.HLen(ctx, slowChaosDone).Result()
		require.NoError(t, err)
		if int(n) < total {
			return false
		}
		s, err := q.Stats(ctx)
		require.NoError(t, err)
		return s.Ready == 0 && s.Delayed == 0 && s.InFlight == 0
	}
	testutil.Eventually(t, 60*time.Second, "the backlog done", drained)
	phase1 := time.Since(begin)

	// Scale-downs: with the backlog done (no retry wakes a scheduler), a
	// delayed job is the only one, and its wake marker the only news of
	// it, held by whichever process took it. All processes but one stop
	// (that one is likely not the holder) until well past the due time;
	// the survivor must promote the job all the same.
	const window = 7 * time.Second
	for range 3 {
		delayed(time.Duration(800+rng.IntN(700)) * time.Millisecond)
		time.Sleep(300 * time.Millisecond) // the chaos schedule: the marker is taken meanwhile
		checkAlive()
		var alive []string
		for id := range procs {
			alive = append(alive, id)
		}
		slices.Sort(alive)
		keep := alive[rng.IntN(len(alive))]
		for _, id := range alive {
			if id != keep {
				kill(id)
				kills++
			}
		}
		for end := time.Now().Add(window); time.Now().Before(end); {
			time.Sleep(250 * time.Millisecond) // the chaos schedule
			sampleOverdue()
		}
		for _, id := range alive {
			if id != keep {
				procs[id] = startSlowChaosProc(t, srv.Addr(), id)
			}
		}
	}
	testutil.Eventually(t, 30*time.Second, "every job done and the queue empty", drained)
	elapsed := time.Since(begin)

	// Stop the survivors cleanly: they drain and exit 0, and none of them
	// had a job swept from under it.
	for _, pr := range procs {
		require.NoError(t, pr.stdin.Close())
	}
	for id, pr := range procs {
		select {
		case err := <-pr.exited:
			require.NoError(t, err, "worker %s:\n%s", id, pr.out)
		case <-time.After(30 * time.Second):
			t.Fatalf("worker %s did not stop:\n%s", id, pr.out)
		}
		t.Logf("%s %s", id, lastLine(pr.out.String()))
		require.NotContains(t, pr.out.String(), "LOST LEASES", "a surviving process had jobs swept from under it")
	}
	procs = nil

	runs, err := c.HGetAll(ctx, slowChaosRuns).Result()
	require.NoError(t, err)
	var twice []string
	for k, v := range runs {
		n, _ := strconv.Atoi(v)
		if n > 1+held[k] {
			twice = append(twice, fmt.Sprintf("%s ran %d times (held by killed processes %d times)", k, n, held[k]))
		}
	}
	slices.Sort(twice)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	t.Logf("%d jobs, %d kills, %d dead consumers injected, %s a background round trip: backlog done in %s, all in %s; longest overdue in the delayed set %s; %d attempts ran more often than killed processes explain",
		total, kills, ghosts, slowChaosLatency, phase1.Round(time.Millisecond), elapsed.Round(time.Millisecond), overdue.Round(time.Millisecond), len(twice))
	require.Empty(t, twice, "attempts that ran twice although no killed process held them: a live process's jobs were swept")
	require.Zero(t, s.Dead, "dead letters")
	// A due job is promoted within BlockTimeout + 1s while any worker of
	// its queue is alive; 1.5s more for a loaded machine.
	require.Less(t, overdue, time.Second+time.Second+1500*time.Millisecond, "a due job stayed in the delayed set although a worker was alive")
}
