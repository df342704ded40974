package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// result is one run of boundedctl.
type result struct {
	code           int
	stdout, stderr string
}

// ctl runs boundedctl in-process with args and the environment env.
func ctl(t testing.TB, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut, func(k string) string { return env[k] })
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// ok runs boundedctl against url and requires exit code 0.
func ok(t testing.TB, url string, args ...string) string {
	t.Helper()
	r := ctl(t, nil, append([]string{"--redis", url}, args...)...)
	require.Equal(t, exitOK, r.code, "boundedctl %s: stderr %s", strings.Join(args, " "), r.stderr)
	require.Empty(t, r.stderr)
	return r.stdout
}

// fails runs boundedctl against url and requires exit code code, returning
// stderr.
func fails(t testing.TB, code int, url string, args ...string) string {
	t.Helper()
	r := ctl(t, nil, append([]string{"--redis", url}, args...)...)
	require.Equal(t, code, r.code, "boundedctl %s: stdout %s stderr %s", strings.Join(args, " "), r.stdout, r.stderr)
	require.NotEmpty(t, r.stderr)
	return r.stderr
}

// decode runs a read command with --json and decodes its output into v.
func decode[T any](t testing.TB, url string, args ...string) T {
	t.Helper()
	var v T
	out := ok(t, url, append(args, "--json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&v), "output %s", out)
	return v
}

// backend is a Redis for the tests: its URL and a pool on it.
type backend struct {
	url string
	p   *pool.Pool
}

func mustPool(t testing.TB, addr string) *pool.Pool {
	t.Helper()
	p, err := pool.New(pool.Config{Addrs: []string{addr}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

var backends = map[string]func(t testing.TB) backend{
	"mini": func(t testing.TB) backend {
		m := redistest.Mini(t)
		return backend{url: "redis://" + m.Addr(), p: mustPool(t, m.Addr())}
	},
	"server": func(t testing.TB) backend {
		r := redistest.Server(t)
		return backend{url: r.URL(), p: mustPool(t, r.Addr())}
	},
}

func eachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for name, mk := range backends {
		t.Run(name, func(t *testing.T) { f(t, mk(t)) })
	}
}

func mustQueue(t testing.TB, p *pool.Pool, name string) *queue.Queue {
	t.Helper()
	q, err := queue.New(p, name, queue.Config{})
	require.NoError(t, err)
	return q
}

// kill enqueues payloads to q with one attempt each and runs a worker that
// fails every job of q with failure (those ready before too), so they end
// in the dead letters; it returns the IDs of payloads' jobs.
func kill(t testing.TB, p *pool.Pool, q *queue.Queue, failure string, payloads ...string) []string {
	t.Helper()
	ctx := context.Background()
	bs := make([][]byte, len(payloads))
	for i, s := range payloads {
		bs[i] = []byte(s)
	}
	before, err := q.Stats(ctx)
	require.NoError(t, err)
	ids, err := q.EnqueueBatch(ctx, bs, queue.MaxAttempts(1))
	require.NoError(t, err)
	g := lifecycle.New()
	c, err := queue.NewConsumer(p, queue.ConsumerConfig{})
	require.NoError(t, err)
	w, err := queue.NewWorker(c, q, func(context.Context, *queue.Job) error {
		return errors.New(failure)
	}, queue.WorkerConfig{Concurrency: 16})
	require.NoError(t, err)
	require.NoError(t, w.Start(g))
	testutil.Eventually(t, time.Minute, "jobs dead", func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Ready == 0 && s.InFlight == 0 && s.Dead-before.Dead >= int64(len(payloads))
	})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, g.Close(cctx))
	return ids
}

func idsOf(jobs []queue.ListedJob) []string {
	out := make([]string, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}
