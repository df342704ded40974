package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

type newPoolFunc func(t testing.TB) *pool.Pool

func mustPool(t testing.TB, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func miniPool(t testing.TB) *pool.Pool {
	return mustPool(t, pool.Config{Addrs: []string{redistest.Mini(t).Addr()}})
}

func serverPool(t testing.TB) *pool.Pool {
	return mustPool(t, pool.Config{Addrs: []string{redistest.Server(t).Addr()}})
}

var backends = map[string]newPoolFunc{"mini": miniPool, "server": serverPool}

func mustQueue(t testing.TB, p *pool.Pool, name string) *queue.Queue {
	t.Helper()
	q, err := queue.New(p, name, queue.Config{})
	require.NoError(t, err)
	return q
}

func mustInspector(t testing.TB, p *pool.Pool) *queue.Inspector {
	t.Helper()
	in, err := queue.NewInspector(p, "")
	require.NoError(t, err)
	return in
}

func mustHandler(t testing.TB, cfg Config) http.Handler {
	t.Helper()
	h, err := New(cfg)
	require.NoError(t, err)
	return h
}

// kill enqueues payloads to q with one attempt each and runs a worker that
// fails them all, so they end in the dead letters; it returns their IDs.
func kill(t testing.TB, p *pool.Pool, q *queue.Queue, payloads [][]byte) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for start := 0; start < len(payloads); start += 1000 {
		got, err := q.EnqueueBatch(ctx, payloads[start:min(len(payloads), start+1000)], queue.MaxAttempts(1))
		require.NoError(t, err)
		ids = append(ids, got...)
	}
	before, err := q.Stats(ctx)
	require.NoError(t, err)
	g := lifecycle.New()
	c, err := queue.NewConsumer(p, queue.ConsumerConfig{})
	require.NoError(t, err)
	w, err := queue.NewWorker(c, q, func(context.Context, *queue.Job) error {
		return errors.New("boom <b>bold</b>")
	}, queue.WorkerConfig{Concurrency: 16})
	require.NoError(t, err)
	require.NoError(t, w.Start(g))
	testutil.Eventually(t, 3*time.Minute, "jobs dead", func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Dead-before.Dead == int64(len(payloads))
	})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, g.Close(cctx))
	return ids
}

type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// call serves one request on h; body, when not nil, is sent as JSON.
func call(t testing.TB, h http.Handler, method, target string, body any, hdr map[string]string) resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, target, rd)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := resp{status: rec.Code, header: rec.Header(), raw: rec.Body.Bytes()}
	if ct := rec.Header().Get("Content-Type"); len(r.raw) > 0 && ct == "application/json; charset=utf-8" {
		require.NoError(t, json.Unmarshal(r.raw, &r.body), "body %s", r.raw)
	}
	return r
}

func get(t testing.TB, h http.Handler, target string) resp {
	t.Helper()
	return call(t, h, http.MethodGet, target, nil, nil)
}

// token reads the handler's CSRF token from api/session.
func token(t testing.TB, h http.Handler) string {
	t.Helper()
	r := get(t, h, "/api/session")
	require.Equal(t, http.StatusOK, r.status)
	return r.body["csrf_token"].(string)
}

// mutate posts a mutation as the page does: JSON, the token, same origin.
func mutate(t testing.TB, h http.Handler, path string, body any) resp {
	t.Helper()
	return call(t, h, http.MethodPost, path, body, map[string]string{
		"Content-Type": "application/json", CSRFHeader: token(t, h),
		"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin",
	})
}

func jobsOf(r resp) []map[string]any {
	var out []map[string]any
	for _, j := range r.body["jobs"].([]any) {
		out = append(out, j.(map[string]any))
	}
	return out
}
