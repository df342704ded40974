package admin

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// mutations are a valid body of each mutation endpoint, for queue "mail".
var mutations = map[string]map[string]any{
	"/api/pause":   {"queue": "mail"},
	"/api/resume":  {"queue": "mail"},
	"/api/requeue": {"queue": "mail", "ids": []string{"id1"}},
	"/api/delete":  {"queue": "mail", "handle": "h"},
	"/api/purge":   {"queue": "mail"},
	"/api/cancel":  {"queue": "mail", "id": "id1"},
}

// requireUnavailable checks a 503 that says Redis is unavailable, with a
// Retry-After, and neither the server's address nor the password.
func requireUnavailable(t *testing.T, r resp, what, addr string) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, r.status, "%s: %s", what, r.raw)
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	require.NoError(t, err, "%s: Retry-After %q", what, r.header.Get("Retry-After"))
	require.Positive(t, secs, what)
	require.Equal(t, "unavailable", r.body["code"], what)
	require.Contains(t, r.body["error"], "Redis", what)
	require.NotContains(t, string(r.raw), addr, what)
	require.NotContains(t, string(r.raw), "s3cret", what)
}

// A Redis that stopped answers every mutation (and every read) with a 503
// and a Retry-After, not a 500: the dashboard is fine, Redis is not; the
// error itself goes to ErrorLog. Bad input is still a 400, before Redis.
func TestMutationsRedisStopped(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{Password: "s3cret"})
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}, Password: "s3cret"})
	q := mustQueue(t, p, "mail")
	_, err := q.Enqueue(context.Background(), []byte("x")) // registers the queue
	require.NoError(t, err)
	logged := make(chan error, 100)
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true, Timeout: 2 * time.Second,
		ErrorLog: func(_ *http.Request, err error) {
			select {
			case logged <- err:
			default:
			}
		}})
	require.Equal(t, http.StatusOK, mutate(t, h, "/api/pause", map[string]any{"queue": "mail"}).status)
	listed := get(t, h, "/api/jobs?queue=mail&state=ready")
	require.Equal(t, http.StatusOK, listed.status, "%s", listed.raw)
	job := jobsOf(listed)[0]
	require.NoError(t, srv.Stop())

	for path, body := range mutations {
		if path == "/api/delete" {
			body = map[string]any{"queue": "mail", "handle": job["handle"]}
		}
		requireUnavailable(t, mutate(t, h, path, body), path, srv.Addr())
	}
	requireUnavailable(t, get(t, h, "/api/queues"), "/api/queues", srv.Addr())
	require.NotEmpty(t, logged, "the errors went to ErrorLog")

	r := mutate(t, h, "/api/pause", map[string]any{"queue": "bad name"})
	require.Equal(t, http.StatusBadRequest, r.status, "%s", r.raw)
	r = mutate(t, h, "/api/requeue", map[string]any{"queue": "mail"})
	require.Equal(t, http.StatusBadRequest, r.status, "%s", r.raw)
}

// A Redis that accepts connections and never answers costs a request its
// Config.Timeout, then answers 503 with a Retry-After.
func TestMutationsRedisTimesOut(t *testing.T) {
	addr := redistest.BlackHole(t)
	p := mustPool(t, pool.Config{Addrs: []string{addr}, Password: "s3cret"})
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true, Timeout: 200 * time.Millisecond})
	for _, path := range []string{"/api/pause", "/api/purge"} {
		requireUnavailable(t, mutate(t, h, path, mutations[path]), path, addr)
	}
}

// Not found is still a 404 with Redis up: the 503 is for Redis failing.
func TestMutationsNotFoundWithRedisUp(t *testing.T) {
	for name, newPool := range backends {
		t.Run(name, func(t *testing.T) {
			p := newPool(t)
			h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true})
			r := mutate(t, h, "/api/pause", map[string]any{"queue": "nosuch"})
			require.Equal(t, http.StatusNotFound, r.status, "%s", r.raw)
			r = mutate(t, h, "/api/cancel", map[string]any{"queue": "nosuch", "id": "nope"})
			require.Equal(t, http.StatusNotFound, r.status, "%s", r.raw)
		})
	}
}

// The dashboard shows one namespace (the Inspector's) and adds this
// process's workers to its queues by name: a worker of a queue of one name
// in another namespace would be shown as this one's. New refuses it,
// naming both namespaces.
func TestNewRefusesWorkerOfAnotherNamespace(t *testing.T) {
	p := miniPool(t)
	other, err := queue.New(p, "mail", queue.Config{Namespace: "other"})
	require.NoError(t, err)
	ok := &fakeWorker{q: mustQueue(t, p, "mail")}
	_, err = New(Config{Inspector: mustInspector(t, p), Workers: []Worker{ok, &fakeWorker{q: other}}})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, `Config.Workers[1]: queue "mail" is in namespace "other", the Inspector reads "bq"`)
	_, err = New(Config{Inspector: mustInspector(t, p), Workers: []Worker{ok}})
	require.NoError(t, err)
	_, err = New(Config{Inspector: mustInspector(t, p), Workers: []Worker{(*queue.Worker)(nil)}})
	require.ErrorContains(t, err, "Config.Workers[0] is nil")
}

// failSecondHGet fails, once armed, every HGET after the first with a
// connection reset that names the server: Redis lost in the middle of a
// requeue.
type failSecondHGet struct {
	armed atomic.Bool
	hgets atomic.Int64
	addr  net.Addr
}

func (f *failSecondHGet) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failSecondHGet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (f *failSecondHGet) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.armed.Load() && cmd.Name() == "hget" && f.hgets.Add(1) > 1 {
			err := &net.OpError{Op: "read", Net: "tcp", Addr: f.addr, Err: syscall.ECONNRESET}
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// A requeue that Redis failed after it moved some jobs is not a 200 whose
// "error" carries the failure's text (the server's address): it answers 503
// with a Retry-After and how many moved, the error in ErrorLog only.
func TestRequeueRedisLostMidway(t *testing.T) {
	m := redistest.Mini(t)
	tcp, err := net.ResolveTCPAddr("tcp", m.Addr())
	require.NoError(t, err)
	hook := &failSecondHGet{addr: tcp}
	p := mustPool(t, pool.Config{Addrs: []string{m.Addr()}, Hooks: []redis.Hook{hook}})
	q := mustQueue(t, p, "ops")
	ids := kill(t, p, q, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	var logged atomic.Int64
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true,
		ErrorLog: func(*http.Request, error) { logged.Add(1) }})
	hook.armed.Store(true)
	r := mutate(t, h, "/api/requeue", map[string]any{"queue": "ops", "ids": ids})
	requireUnavailable(t, r, "requeue", m.Addr())
	require.Equal(t, float64(1), r.body["requeued"], "%s", r.raw)
	require.Equal(t, int64(1), logged.Load())
}

// A client that went away (its request's context cancelled) is not Redis
// failing: nothing goes to ErrorLog, and the answer is 499 (nginx's "client
// closed request"), not a 503 that blames Redis, on a read and a mutation.
func TestClientGoneIsNotRedisFailure(t *testing.T) {
	p := miniPool(t)
	var logged atomic.Int32
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true,
		ErrorLog: func(*http.Request, error) { logged.Add(1) }})
	tok := token(t, h)
	for _, tc := range []struct {
		method, path string
		body         string
	}{
		{http.MethodGet, "/api/queues", ""},
		{http.MethodPost, "/api/pause", `{"queue":"mail"}`},
		{http.MethodPost, "/api/purge", `{"queue":"mail"}`},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequestWithContext(ctx, tc.method, tc.path, strings.NewReader(tc.body))
		if tc.method == http.MethodPost {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(CSRFHeader, tok)
			req.Header.Set("Origin", "http://example.com")
			req.Header.Set("Sec-Fetch-Site", "same-origin")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, StatusClientClosedRequest, rec.Code, "%s: %s", tc.path, rec.Body.String())
		require.Empty(t, rec.Header().Get("Retry-After"), tc.path)
		require.NotContains(t, rec.Body.String(), "Redis", tc.path)
	}
	require.Zero(t, logged.Load(), "a client gone is not logged as a Redis error")
}
