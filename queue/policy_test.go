package queue

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// logRecorder is a slog.Handler keeping the messages logged at Warn and
// above, for tests; safe for concurrent use.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	r.mu.Unlock()
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// count returns how many messages start with prefix.
func (r *logRecorder) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

func TestEvicting(t *testing.T) {
	for p, want := range map[string]bool{
		"noeviction": false, "unknown": false, "": false,
		"allkeys-lru": true, "allkeys-lfu": true, "allkeys-random": true,
		"volatile-lru": true, "volatile-lfu": true, "volatile-random": true, "volatile-ttl": true,
	} {
		require.Equal(t, want, evicting(p), p)
	}
	require.Equal(t, "allkeys-lru", infoField("# Memory\r\nused_memory:1\r\nmaxmemory_policy:allkeys-lru\r\n", "maxmemory_policy"))
}

// TestPolicyUnknown: miniredis answers neither CONFIG GET nor INFO memory, as
// a managed Redis may refuse both: the policy is "unknown", said once at
// Warn level, and Start does not fail, even with RefuseEvictingPolicy.
func TestPolicyUnknown(t *testing.T) {
	p := miniPool(t, pool.Config{})
	logs := &logRecorder{}
	q := mustQueue(t, p, "q", Config{})
	w := startWorker(t, group(t), q, func(context.Context, *Job) error { return nil },
		WorkerConfig{RefuseEvictingPolicy: true, Logger: slog.New(logs)})
	mem := w.Stats().Memory
	require.Equal(t, "unknown", mem.Policy)
	require.False(t, mem.Evicting)
	require.False(t, mem.AtLimit)
	require.Equal(t, 1, logs.count("WARN queue: cannot read Redis's maxmemory-policy"))
}

// TestEvictingPolicy: on a real server with allkeys-lru, a worker with
// RefuseEvictingPolicy does not start (ErrEvictingPolicy, nothing started),
// one without it starts, says so once at Error level and shows it in its
// stats; after Redis restarts (its CONFIG SET gone: noeviction again) the
// fetcher reconnects and reads the policy again.
func TestEvictingPolicy(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	_, err := srv.Do(ctx, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
	require.NoError(t, err)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "q", Config{})
	h := func(context.Context, *Job) error { return nil }
	g := group(t)

	strict, err := newWorker(t, q, h, WorkerConfig{RefuseEvictingPolicy: true})
	require.NoError(t, err)
	err = strict.Start(g)
	require.ErrorIs(t, err, ErrEvictingPolicy)
	require.ErrorContains(t, err, "allkeys-lru")
	require.Empty(t, g.Tasks())

	logs := &logRecorder{}
	w := startWorker(t, g, q, h, WorkerConfig{BlockTimeout: time.Second, Logger: slog.New(logs)})
	mem := w.Stats().Memory
	require.Equal(t, "allkeys-lru", mem.Policy)
	require.True(t, mem.Evicting)
	require.Equal(t, 1, logs.count("ERROR queue: Redis's maxmemory-policy evicts any key"))

	srv.Restart()
	testutil.Eventually(t, testutil.Wait, "policy read again after the reconnect", func() bool {
		return w.Memory().Policy == "noeviction"
	})
	require.False(t, w.Memory().Evicting)
	require.Equal(t, 1, logs.count("ERROR queue: Redis's maxmemory-policy evicts any key"), "said once per change")
	require.Equal(t, 1, logs.count("INFO queue: Redis's maxmemory-policy changed"))
}

// TestPolicyReadAgainAfterTheHubsConnectionFailed: a restart of Redis may
// be seen only by the fetch hub (its BZPOPMIN fails; the fetcher it wakes
// takes on a fresh connection, once Redis is back, without a failure of its
// own): the policy is read again all the same. Here the hub's connection
// alone is killed, after a CONFIG SET that stands for the restarted
// server's configuration.
func TestPolicyReadAgainAfterTheHubsConnectionFailed(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	_, err := srv.Do(ctx, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
	require.NoError(t, err)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "q", Config{})
	logs := &logRecorder{}
	w := startWorker(t, group(t), q, func(context.Context, *Job) error { return nil },
		WorkerConfig{BlockTimeout: time.Second, Logger: slog.New(logs)})
	require.Equal(t, "allkeys-lru", w.Memory().Policy)

	_, err = srv.Do(ctx, "CONFIG", "SET", "maxmemory-policy", "noeviction")
	require.NoError(t, err)
	var hub string // the id of the hub's connection, blocked in BZPOPMIN
	testutil.Eventually(t, testutil.Wait, "the hub blocked", func() bool {
		list, err := srv.Do(ctx, "CLIENT", "LIST")
		if err != nil {
			return false
		}
		for line := range strings.Lines(list) {
			if strings.Contains(line, " cmd=bzpopmin") {
				f := strings.Fields(line)
				hub, _ = strings.CutPrefix(f[0], "id=")
				return true
			}
		}
		return false
	})
	_, err = srv.Do(ctx, "CLIENT", "KILL", "ID", hub)
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "policy read again after the hub's connection failed", func() bool {
		return w.Memory().Policy == "noeviction"
	})
	require.Equal(t, 1, logs.count("INFO queue: Redis's maxmemory-policy changed"))
}

// TestPolicyFromInfo: a Redis that refuses CONFIG (renamed away, as managed
// Redis services do) still tells its policy in INFO memory. volatile-* is
// evicting too: it deletes the idempotency keys.
func TestPolicyFromInfo(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{Args: []string{"--maxmemory-policy", "volatile-lru", "--rename-command", "CONFIG", ""}})
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	_, err := p.Background().ConfigGet(context.Background(), "maxmemory-policy").Result()
	require.Error(t, err, "CONFIG is renamed away")
	logs := &logRecorder{}
	q := mustQueue(t, p, "q", Config{})
	w := startWorker(t, group(t), q, func(context.Context, *Job) error { return nil }, WorkerConfig{Logger: slog.New(logs)})
	require.Equal(t, "volatile-lru", w.Memory().Policy)
	require.True(t, w.Memory().Evicting)
	require.Equal(t, 1, logs.count("ERROR queue: Redis's maxmemory-policy evicts keys with a TTL"))

	strict, err := newWorker(t, mustQueue(t, p, "other", Config{}), func(context.Context, *Job) error { return nil }, WorkerConfig{RefuseEvictingPolicy: true})
	require.NoError(t, err)
	require.True(t, errors.Is(strict.Start(group(t)), ErrEvictingPolicy))
}

// policyReadHook calls during, from inside each command, as a failure of
// the hub's connection would land while the policy is being read.
type policyReadHook struct{ during func() }

func (h policyReadHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h policyReadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.during()
		return err
	}
}
func (h policyReadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestPolicyStaleAfterAFailureDuringTheRead: a failure of the hub's
// connection while the fetcher reads the policy (after Redis answered the
// read, before it was recorded) is not lost: the answer may predate a
// restart that the failure is the only sign of, so the next fetch reads the
// policy again.
func TestPolicyStaleAfterAFailureDuringTheRead(t *testing.T) {
	srv := redistest.Server(t)
	w := &Worker{log: slog.New(&logRecorder{})}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer func() { _ = c.Close() }()
	c.AddHook(policyReadHook{during: w.mem.connectionFailed})
	require.True(t, w.readPolicy(context.Background(), c))
	require.Equal(t, "noeviction", w.Memory().Policy)
	require.True(t, w.mem.policyStale(), "the connection failed during the read: the policy must be read again")

	// A read with no failure during it clears the mark.
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer func() { _ = plain.Close() }()
	require.True(t, w.readPolicy(context.Background(), plain))
	require.False(t, w.mem.policyStale())
}
