package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
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

// payloadSet records which payloads a handler has seen.
type payloadSet struct {
	mu   sync.Mutex
	seen map[string]int
}

func newPayloadSet() *payloadSet { return &payloadSet{seen: map[string]int{}} }

func (s *payloadSet) add(p []byte) {
	s.mu.Lock()
	s.seen[string(p)]++
	s.mu.Unlock()
}

func (s *payloadSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func (s *payloadSet) has(p string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[p] > 0
}

// steady notes the tasks and goroutines of a running worker, and later
// checks that an outage left neither more tasks nor more goroutines behind.
type steady struct {
	tasks, goroutines int
}

func noteSteady(g *lifecycle.Group) steady {
	return steady{tasks: len(g.Tasks()), goroutines: runtime.NumGoroutine()}
}

func (s steady) check(t *testing.T, g *lifecycle.Group) {
	t.Helper()
	require.Equal(t, s.tasks, len(g.Tasks()), "no task added or lost")
	// Goroutines that end by themselves (a connection's dial, a timer's
	// callback) may still be on their way out: wait for them, bounded.
	var now int
	deadline := time.Now().Add(10 * time.Second)
	for now = runtime.NumGoroutine(); now > s.goroutines+2 && time.Now().Before(deadline); now = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	require.LessOrEqual(t, now, s.goroutines+2, "goroutines grew from %d to %d", s.goroutines, now)
}

// TestRedisOutageMidRun stops Redis (append-only, so it keeps its data)
// while a worker is busy, keeps it down long enough for everything to
// notice, and starts it again: during the outage enqueues fail fast with
// pool.ErrUnavailable and the worker backs off; after it, the worker
// resumes by itself, every job runs, the outcomes held during the outage
// are written, and no goroutine is left over.
func TestRedisOutageMidRun(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{AppendOnly: true})
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}, ProbeInterval: 50 * time.Millisecond})
	q := mustQueue(t, p, "outage", Config{})
	ctx := context.Background()
	g := group(t)
	seen := newPayloadSet()
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		time.Sleep(2 * time.Millisecond) // the work, so some jobs are running when Redis stops
		seen.add(j.Payload)
		return nil
	}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second}, ConsumerConfig{HeartbeatInterval: 200 * time.Millisecond})
	payloads := make([][]byte, 500)
	for i := range payloads {
		payloads[i] = []byte(fmt.Sprint("a", i))
	}
	_, err := q.EnqueueBatch(ctx, payloads)
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "the worker is busy", func() bool { return seen.len() >= 50 })
	st := noteSteady(g)

	require.NoError(t, srv.Stop())
	stopped := time.Now()
	// The first calls find the connection refused; once the pool has seen
	// enough of them, calls fail at once without touching the network.
	testutil.Eventually(t, 10*time.Second, "enqueues fail fast", func() bool {
		_, err := q.Enqueue(ctx, []byte("during"))
		return errors.Is(err, pool.ErrUnavailable)
	})
	fast := 0
	start := time.Now()
	for range 1000 {
		_, err := q.Enqueue(ctx, []byte("during"))
		require.Error(t, err)
		if errors.Is(err, pool.ErrUnavailable) {
			fast++
		}
	}
	perCall := time.Since(start) / 1000
	require.Greater(t, fast, 900, "all but the probes (one per ProbeInterval) fail fast")
	require.Error(t, p.Health().LastError, "the failure that marked Redis down")
	testutil.Eventually(t, 10*time.Second, "the fetcher backs off", func() bool {
		s := w.Stats()
		return s.FetcherState == fetcherStateNames[fetcherBackingOff] && s.FetchErrors >= 5
	})
	heldOutcomes := w.Stats().InFlight
	t.Logf("outage: enqueue failed fast in %s per call (%d of 1000 with pool.ErrUnavailable); worker holds %d jobs", perCall, fast, heldOutcomes)

	srv.Start()
	restarted := time.Now()
	for i := range 50 {
		testutil.Eventually(t, 20*time.Second, "enqueue after the restart", func() bool {
			_, err := q.Enqueue(ctx, []byte(fmt.Sprint("b", i)))
			return err == nil
		})
	}
	testutil.Eventually(t, 20*time.Second, "the first job after the restart", func() bool { return seen.has("b0") })
	resumed := time.Since(restarted)
	testutil.Eventually(t, 20*time.Second, "every job", func() bool { return seen.len() == 550 })
	testutil.Eventually(t, 10*time.Second, "every outcome written", func() bool { return w.Stats().InFlight == 0 })
	t.Logf("Redis down for %s; worker resumed %s after it came back", restarted.Sub(stopped).Round(time.Millisecond), resumed.Round(time.Millisecond))

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, s.Ready+s.InFlight+s.Delayed+s.Dead, "%+v", s)
	ws := w.Stats()
	require.Positive(t, ws.FetchErrors)
	require.Zero(t, ws.Failed)
	st.check(t, g)
}

// clientID finds the id of the connection whose name is name.
func clientID(t *testing.T, srv *redistest.Redis, name string) string {
	t.Helper()
	clients, err := srv.Clients(context.Background())
	require.NoError(t, err)
	for _, c := range clients {
		if strings.Contains(c, " name="+name+" ") {
			id, _, _ := strings.Cut(strings.TrimPrefix(c, "id="), " ")
			return id
		}
	}
	return ""
}

// TestWorkerSurvivesClientKill cuts the worker's connections with CLIENT
// KILL: first its consumer's fetch hub's, blocked in BZPOPMIN, then every client
// connection at once. The worker reconnects by itself and keeps processing;
// nothing is lost and no goroutine is added.
func TestWorkerSurvivesClientKill(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "killed", Config{})
	ctx := context.Background()
	g := group(t)
	seen := newPayloadSet()
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		seen.add(j.Payload)
		return nil
	}, WorkerConfig{Concurrency: 2, BlockTimeout: 5 * time.Second}, ConsumerConfig{ConsumerID: "killed-1"})
	enqueue := func(payload string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, "enqueue "+payload, func() bool {
			_, err := q.Enqueue(ctx, []byte(payload))
			return err == nil
		})
	}
	enqueue("warm")
	testutil.Eventually(t, 5*time.Second, "warm-up job", func() bool { return seen.has("warm") })
	testutil.Eventually(t, 5*time.Second, "acked", func() bool { return w.Stats().InFlight == 0 })
	st := noteSteady(g)

	// The fetcher's connection, while it blocks on an empty queue.
	var id string
	testutil.Eventually(t, 5*time.Second, "the hub blocking in BZPOPMIN", func() bool {
		id = clientID(t, srv, "bounded-blocking-queue:consumer:killed-1")
		return id != "" && w.Stats().FetcherState == fetcherStateNames[fetcherBlocking]
	})
	n, err := srv.Do(ctx, "CLIENT", "KILL", "ID", id)
	require.NoError(t, err)
	require.Equal(t, "1", n)
	testutil.Eventually(t, 5*time.Second, "the fetcher saw it", func() bool { return w.Stats().FetchErrors == 1 })
	enqueue("after fetcher kill")
	testutil.Eventually(t, 10*time.Second, "a job after the fetcher's connection was killed", func() bool { return seen.has("after fetcher kill") })
	require.NotEqual(t, id, clientID(t, srv, "bounded-blocking-queue:consumer:killed-1"), "a new connection")

	// Every client connection at once, with jobs coming in.
	for i := range 20 {
		enqueue(fmt.Sprint("before ", i))
	}
	killed, err := srv.Do(ctx, "CLIENT", "KILL", "TYPE", "normal")
	require.NoError(t, err)
	for i := range 20 {
		enqueue(fmt.Sprint("after ", i))
	}
	testutil.Eventually(t, 20*time.Second, "every job", func() bool { return seen.len() == 42 })
	testutil.Eventually(t, 10*time.Second, "every outcome written", func() bool { return w.Stats().InFlight == 0 })
	t.Logf("CLIENT KILL TYPE normal closed %s connections; fetch errors %d", killed, w.Stats().FetchErrors)

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, s.Ready+s.InFlight+s.Dead, "%+v", s)
	st.check(t, g)
}
