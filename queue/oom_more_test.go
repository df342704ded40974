package queue

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// TestRetryAndDeadAtMemoryLimit: with Redis held at its limit by another
// queue, jobs whose payloads are kept apart are fetched, retried (a new
// delayed entry, promoted again at the limit) and dead-lettered, each the
// number of times it should run, with its payload intact.
func TestRetryAndDeadAtMemoryLimit(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "apart", Config{MaxAttempts: 2})
	ctx := context.Background()
	const jobs = 30
	payload := func(i int) []byte {
		return append([]byte(strconv.Itoa(i)+":"), bytes.Repeat([]byte{'p'}, 2*inlineMax)...)
	}
	for i := range jobs {
		_, err := q.Enqueue(ctx, payload(i))
		require.NoError(t, err)
	}
	fillToLimit(t, srv, mustQueue(t, p, "filler", Config{}))

	var mu sync.Mutex
	runs := map[int]int{}
	bad := 0
	w := startWorker(t, group(t), q, func(_ context.Context, job *Job) error {
		s := string(job.Payload)
		head, _, _ := strings.Cut(s, ":")
		i, _ := strconv.Atoi(head)
		mu.Lock()
		defer mu.Unlock()
		if !bytes.Equal(job.Payload, payload(i)) {
			bad++
		}
		runs[i]++
		if runs[i] == 1 || i%2 == 1 {
			return errors.New("fail " + strconv.Itoa(i))
		}
		return nil
	}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second, Backoff: func(int, error) time.Duration { return 10 * time.Millisecond }})
	testutil.Eventually(t, 30*time.Second, "every job done or dead", func() bool {
		st := w.Stats()
		return st.Processed == jobs/2 && st.Dead == jobs/2
	})
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, bad)
	require.Len(t, runs, jobs)
	for i, n := range runs {
		require.Equal(t, 2, n, "job %d", i)
	}
	dead, err := q.Dead(ctx, 0, jobs)
	require.NoError(t, err)
	require.Len(t, dead, jobs/2)
	require.True(t, w.Memory().AtLimit)
	_, err = q.Enqueue(ctx, []byte("x"))
	require.True(t, isOOM(err), "still at the limit: %v", err)
}

// TestPolicyRefusedByACL: a user whose ACL refuses both CONFIG and INFO
// starts, its policy "unknown", said once at Warn level, and a worker with
// RefuseEvictingPolicy starts too.
func TestPolicyRefusedByACL(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	_, err := srv.Do(ctx, "ACL", "SETUSER", "app", "on", ">secret", "~*", "&*", "+@all", "-config", "-info")
	require.NoError(t, err)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}, Username: "app", Password: "secret"})
	_, err = p.Background().Info(ctx, "memory").Result()
	require.ErrorContains(t, err, "NOPERM")
	logs := &logRecorder{}
	q := mustQueue(t, p, "q", Config{})
	w := startWorker(t, group(t), q, func(context.Context, *Job) error { return nil },
		WorkerConfig{RefuseEvictingPolicy: true, BlockTimeout: time.Second, Logger: slog.New(logs)})
	require.Equal(t, "unknown", w.Memory().Policy)
	require.Equal(t, 1, logs.count("WARN queue: cannot read Redis's maxmemory-policy"))
	require.Zero(t, logs.count("ERROR"))
}

// TestRestartAtMemoryLimit: Redis (append-only) restarts while full and
// while the worker holds jobs taken at the limit: the worker reconnects,
// finds its scripts gone and Redis at the limit again, and every job runs
// exactly once.
func TestRestartAtMemoryLimit(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{AppendOnly: true})
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "restart", Config{})
	ctx := context.Background()
	total := fillToLimit(t, srv, q)
	limit, err := srv.Do(ctx, "CONFIG", "GET", "maxmemory")
	require.NoError(t, err)
	max := strings.Fields(limit)[len(strings.Fields(limit))-1]

	gate := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]int{}
	w := startWorker(t, group(t), q, func(ctx context.Context, job *Job) error {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		seen[string(job.ID)]++
		mu.Unlock()
		return nil
	}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second})
	testutil.Eventually(t, testutil.Wait, "handlers holding jobs taken at the limit", func() bool {
		return w.Stats().InFlight == 4 && w.Memory().FetchedAtLimit > 0
	})
	srv.Restart()
	_, err = srv.Do(ctx, "CONFIG", "SET", "maxmemory", max)
	require.NoError(t, err)
	_, err = srv.Do(ctx, "CONFIG", "SET", "maxmemory-policy", "noeviction")
	require.NoError(t, err)
	close(gate)
	testutil.Eventually(t, 60*time.Second, "every job processed", func() bool {
		return w.Stats().Processed >= uint64(total)
	})
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, total)
	for id, n := range seen {
		require.Equal(t, 1, n, "job %s", id)
	}
	// Processed counts a job before the acker has written its outcome.
	testutil.Eventually(t, testutil.Wait, "every outcome written", func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Ready+s.Delayed+s.InFlight == 0
	})
}

// TestCrashAfterTakeAtMemoryLimit: a process dies (its ACL user switched
// off and its connections killed) holding jobs it took with the allow-oom
// take script, its heartbeat and incarnation written by the replay at the
// limit; another process started at the limit recovers those jobs with its
// sweep and runs every job exactly once.
func TestCrashAfterTakeAtMemoryLimit(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	_, err := srv.Do(ctx, "ACL", "SETUSER", "a", "on", ">pa", "~*", "&*", "+@all")
	require.NoError(t, err)
	pa := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}, Username: "a", Password: "pa"})
	qa := mustQueue(t, pa, "crash", Config{})
	total := fillToLimit(t, srv, qa)

	ga := lifecycle.New()
	wa := startWorker(t, ga, qa, func(ctx context.Context, _ *Job) error {
		<-ctx.Done()
		return ctx.Err()
	}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTTL: time.Second})
	testutil.Eventually(t, testutil.Wait, "A holds jobs taken at the limit", func() bool {
		return wa.Stats().InFlight == 4 && wa.Memory().FetchedAtLimit > 0
	})
	require.True(t, wa.Memory().AtLimit)
	held, err := pa.Background().LLen(ctx, qa.k.proc(wa.Stats().ConsumerID)).Result()
	require.NoError(t, err)
	require.Equal(t, int64(4), held, "the taken jobs are in A's processing list")
	// A dies: it can no longer talk to Redis.
	_, err = srv.Do(ctx, "ACL", "SETUSER", "a", "off")
	require.NoError(t, err)
	_, err = srv.Do(ctx, "CLIENT", "KILL", "USER", "a")
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_ = ga.Close(cctx) // fails to put the jobs back: they stay in A's list
	cancel()

	pb := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	qb := mustQueue(t, pb, "crash", Config{})
	var mu sync.Mutex
	seen := map[string]int{}
	wb := startWorker(t, group(t), qb, func(_ context.Context, job *Job) error {
		mu.Lock()
		seen[job.ID]++
		mu.Unlock()
		return nil
	}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTTL: time.Second})
	testutil.Eventually(t, 60*time.Second, "every job processed by B", func() bool {
		return wb.Stats().Processed >= uint64(total)
	})
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, total)
	for id, n := range seen {
		require.Equal(t, 1, n, "job %s", id)
	}
	require.Equal(t, uint64(4), wb.Stats().Recovered)
	s, err := qb.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, s.Ready+s.Delayed+s.InFlight)
}

// TestHoverAtMemoryLimit: producers fill what the worker frees, so Redis
// flips between refusing and accepting writes with every few commands:
// every accepted job runs exactly once, and reaching the limit is logged
// once.
func TestHoverAtMemoryLimit(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "hover", Config{})
	ctx := context.Background()
	fillToLimit(t, srv, q)

	var mu sync.Mutex
	seen := map[string]int{}
	logs := &logRecorder{}
	w := startWorker(t, group(t), q, func(_ context.Context, job *Job) error {
		mu.Lock()
		seen[job.ID]++
		mu.Unlock()
		return nil
	}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second, Logger: slog.New(logs)})

	accepted, refused := map[string]bool{}, 0
	payload := []byte(strings.Repeat("y", 1000))
	for len(accepted) < 3000 {
		id, err := q.Enqueue(ctx, payload)
		if err != nil {
			require.True(t, isOOM(err), "%v", err)
			refused++
			continue
		}
		accepted[id] = true
	}
	t.Logf("accepted %d, refused %d; at limit %d times", len(accepted), refused, w.mem.entered.Load())
	testutil.Eventually(t, 60*time.Second, "every job run", func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Ready+s.InFlight == 0
	})
	mu.Lock()
	defer mu.Unlock()
	for id := range accepted {
		require.Equal(t, 1, seen[id], "job %s", id)
	}
	for id, n := range seen {
		require.Equal(t, 1, n, "job %s", id)
	}
	require.LessOrEqual(t, logs.count("ERROR"), 1)
	require.Zero(t, logs.count("WARN"))
}

// TestDeadLettersAtMemoryLimit: dead-lettering gets through at the limit
// (its script deletes first), but each dead record keeps the handler's
// error, up to 8 KiB: jobs failing with long errors grew a full Redis far
// over maxmemory (measured: 15.8 MiB over a 3 MiB limit for 1,676 jobs).
// At the limit the reason is cut short: a dead letter still costs more than
// its element freed (the record's hash and index entries, about 1 KiB here,
// bounded by DeadLetterMax), but not its 8 KiB reason.
func TestDeadLettersAtMemoryLimit(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "grow", Config{MaxAttempts: 1})
	ctx := context.Background()
	n := fillToLimit(t, srv, q)
	mem := func(f string) int64 {
		info, err := srv.Do(ctx, "INFO", "memory")
		require.NoError(t, err)
		v, _ := strconv.ParseInt(infoField(info, f), 10, 64)
		return v
	}
	reason := strings.Repeat("e", 8<<10)
	w := startWorker(t, group(t), q, func(context.Context, *Job) error { return errors.New(reason) }, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second})
	testutil.Eventually(t, 60*time.Second, "all dead", func() bool { return w.Stats().Dead == uint64(n) })
	used, limit := mem("used_memory"), mem("maxmemory")
	t.Logf("%d jobs dead-lettered at the limit: used_memory %d, maxmemory %d (%+d KiB)", n, used, limit, (used-limit)>>10)
	require.LessOrEqual(t, (used-limit)/int64(n), int64(1536), "bytes per dead letter over maxmemory")
	dead, err := q.Dead(ctx, 0, 1)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Contains(t, dead[0].Reason, "Redis at maxmemory")
}
