package queue

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// Issue 18's cron acceptance test: 8 processes register the same 10
// schedules at Every(1s); each occurrence runs exactly once, none missing,
// including across a SIGKILL of the process that ran the latest
// occurrence (so enqueued the next one, and likely took its wake marker).
// BOUNDED_CRON_SOAK sets the duration (default 24s; the figure is
// 2m).
const (
	cronFleetProcs     = 8
	cronFleetSchedules = 10
	cronFleetQueue     = "cronfleet"
	cronFleetRuns      = "cronfleet:runs" // hash: "<schedule>|<due ms>" -> runs started
	cronFleetDone      = "cronfleet:done" // hash: "<schedule>|<due ms>" -> runs completed
	cronFleetLast      = "cronfleet:last" // the consumer that started the latest run
	// A TTL long enough that a live process slowed by the race detector
	// on a loaded machine is not taken for dead (then its running
	// occurrences would be swept and run twice: measured with 3 s at load
	// 20), short enough that the killed process's runs are recovered well
	// before the end.
	cronFleetInterval = time.Second
	cronFleetTTL      = 6 * time.Second
	cronEnvAddr       = "BOUNDED_CRONFLEET_REDIS"
	cronEnvConsumer   = "BOUNDED_CRONFLEET_CONSUMER"
)

func cronFleetSet() []ScheduleSpec {
	set := make([]ScheduleSpec, cronFleetSchedules)
	for i := range set {
		set[i] = ScheduleSpec{Name: fmt.Sprint("s", i), Spec: Every(time.Second)}
	}
	return set
}

// TestCronFleetWorkerProcess is a process of TestCronFleetChaos.
func TestCronFleetWorkerProcess(t *testing.T) {
	addr := os.Getenv(cronEnvAddr)
	if addr == "" {
		t.Skip("a worker process of TestCronFleetChaos; runs only when it starts it")
	}
	p := mustPool(t, pool.Config{Addrs: []string{addr}})
	q := mustQueue(t, p, cronFleetQueue, Config{})
	id := os.Getenv(cronEnvConsumer)
	require.NoError(t, q.SetSchedules(context.Background(), 1, cronFleetSet()...))
	g := lifecycle.New()
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		pipe := p.Client().TxPipeline()
		pipe.HIncrBy(ctx, cronFleetRuns, j.Schedule+"|"+strconv.FormatInt(j.Due.UnixMilli(), 10), 1)
		pipe.Set(ctx, cronFleetLast, id, 0)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		// Some work, so that a kill often lands mid-run.
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		return p.Client().HIncrBy(ctx, cronFleetDone, j.Schedule+"|"+strconv.FormatInt(j.Due.UnixMilli(), 10), 1).Err()
	}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second}, ConsumerConfig{
		ConsumerID: id, HeartbeatInterval: cronFleetInterval, HeartbeatTTL: cronFleetTTL,
	})
	fmt.Println("started")
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
}

func TestCronFleetChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cron test: takes ~30s")
	}
	soak := 24 * time.Second
	if v := os.Getenv("BOUNDED_CRON_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "BOUNDED_CRON_SOAK")
		soak = d
	}
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, cronFleetQueue, Config{})
	c := p.Client()
	ctx := context.Background()

	var procs []*chaosProc
	next := 0
	spawn := func() {
		id := fmt.Sprint("cf-", next)
		next++
		procs = append(procs, startWorkerProcess(t, "TestCronFleetWorkerProcess", id, cronEnvAddr+"="+srv.Addr(), cronEnvConsumer+"="+id))
	}
	t.Cleanup(func() {
		for _, pr := range procs {
			_ = pr.cmd.Process.Kill()
			pr.awaitExit(t)
		}
	})
	for range cronFleetProcs {
		spawn()
	}
	for _, pr := range procs {
		testutil.Eventually(t, 60*time.Second, pr.id+" started", func() bool { return strings.Contains(pr.out.String(), "started") })
	}
	begin := time.Now()

	// Half-way: SIGKILL the process that started the latest run (it took
	// that occurrence and enqueued the next), read what it held, start
	// a replacement.
	time.Sleep(soak / 2) // the test's schedule, not a wait for a condition
	// Just after a second boundary, when the occurrences due then are
	// running (the handlers take 100ms).
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 40*time.Millisecond)))
	victimID, err := c.Get(ctx, cronFleetLast).Result()
	require.NoError(t, err)
	var victim *chaosProc
	for i, pr := range procs {
		if pr.id == victimID {
			victim = pr
			procs = append(procs[:i], procs[i+1:]...)
			break
		}
	}
	require.NotNil(t, victim, "the latest runner %q is one of ours", victimID)
	require.NoError(t, victim.cmd.Process.Kill())
	victim.awaitExit(t)
	held, err := c.LRange(ctx, q.k.proc(victimID), 0, -1).Result()
	require.NoError(t, err)
	heldOcc := map[string]bool{} // may run twice: they were running when killed
	for _, e := range held {
		if env, err := decodeEnvelope([]byte(e)); err == nil {
			if name, due, ok := parseOccurrence(env.id); ok {
				heldOcc[name+"|"+strconv.FormatInt(due, 10)] = true
			}
		}
	}
	t.Logf("killed %s after %s holding %d occurrences", victimID, time.Since(begin).Round(time.Millisecond), len(heldOcc))
	spawn()

	time.Sleep(soak / 2)
	stop := time.Now()
	for _, pr := range procs {
		_ = pr.stdin.Close()
	}
	for _, pr := range procs {
		select {
		case err := <-pr.exited:
			require.NoError(t, err, "%s:\n%s", pr.id, pr.out)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not stop", pr.id)
		}
	}
	procs = nil

	runs, err := c.HGetAll(ctx, cronFleetRuns).Result()
	require.NoError(t, err)
	done, err := c.HGetAll(ctx, cronFleetDone).Result()
	require.NoError(t, err)
	first := map[string]int64{}
	for k := range runs {
		name, dueS, _ := strings.Cut(k, "|")
		due, err := strconv.ParseInt(dueS, 10, 64)
		require.NoError(t, err)
		if f, ok := first[name]; !ok || due < f {
			first[name] = due
		}
	}
	require.Len(t, first, cronFleetSchedules, "every schedule ran")
	// Every occurrence from each schedule's first one to 2 s before the
	// stop (later ones may still be pending when the processes drain).
	last := stop.Add(-2 * time.Second).UnixMilli()
	var missing, doubled []string
	checked := 0
	for name, f := range first {
		for due := f; due <= last; due += 1000 {
			k := name + "|" + strconv.FormatInt(due, 10)
			n, _ := strconv.Atoi(runs[k])
			d, _ := strconv.Atoi(done[k])
			checked++
			switch {
			case n == 0 || d == 0: // never started, or never finished
				missing = append(missing, fmt.Sprintf("%s started %d finished %d", k, n, d))
			case n > 1 && !(n == 2 && heldOcc[k]):
				doubled = append(doubled, fmt.Sprintf("%s x%d", k, n))
			}
		}
	}
	t.Logf("%d occurrences checked over %s, %d runs recorded, %d held by the killed process", checked, stop.Sub(begin).Round(time.Second), len(runs), len(heldOcc))
	require.Empty(t, missing, "occurrences that never ran to the end")
	require.Empty(t, doubled, "occurrences that ran twice (besides those the killed process held)")
	for k := range heldOcc {
		d, _ := strconv.Atoi(done[k])
		require.GreaterOrEqual(t, d, 1, "%s, held by the killed process, ran to the end after all", k)
	}
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, s.Dead)
}
