package admin

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/pool"
)

// queueRow returns the row of name in api/queues' first page.
func queueRow(t *testing.T, h http.Handler, name string) map[string]any {
	t.Helper()
	r := get(t, h, "/api/queues?limit=1000")
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	for _, q := range r.body["queues"].([]any) {
		if m := q.(map[string]any); m["name"] == name {
			return m
		}
	}
	return nil
}

// Pause and resume go through every mutation check first, then pause the
// queue fleet-wide (queue.Queue.Paused says so, api/queues shows it), and
// refuse names that are invalid or that the registry does not list.
func TestPauseResume(t *testing.T) {
	for name, newPool := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := newPool(t)
			q := mustQueue(t, p, "mail")
			_, err := q.Enqueue(ctx, []byte("x")) // lists the queue in the registry
			require.NoError(t, err)
			paused := func() bool {
				t.Helper()
				v, err := q.Paused(ctx)
				require.NoError(t, err)
				return v
			}
			body := map[string]any{"queue": "mail"}

			ro := mustHandler(t, Config{Inspector: mustInspector(t, p)})
			for _, path := range []string{"/api/pause", "/api/resume"} {
				r := mutate(t, ro, path, body)
				require.Equal(t, http.StatusForbidden, r.status, "%s: %s", path, r.raw)
				require.Equal(t, "read_only", r.body["code"])
			}
			require.False(t, paused(), "a read-only handler paused the queue")

			h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true})
			tok := token(t, h)
			for what, hdr := range map[string]map[string]string{
				"no token":       {"Content-Type": "application/json"},
				"wrong token":    {"Content-Type": "application/json", CSRFHeader: strings.Repeat("0", 64)},
				"foreign origin": {"Content-Type": "application/json", CSRFHeader: tok, "Origin": "https://evil.example"},
				"cross-site":     {"Content-Type": "application/json", CSRFHeader: tok, "Sec-Fetch-Site": "cross-site"},
			} {
				r := call(t, h, http.MethodPost, "/api/pause", body, hdr)
				require.Equal(t, http.StatusForbidden, r.status, "%s: %s", what, r.raw)
			}
			require.Equal(t, http.StatusMethodNotAllowed, get(t, h, "/api/pause?queue=mail").status)
			require.False(t, paused(), "a refused request paused the queue")
			require.Equal(t, false, queueRow(t, h, "mail")["paused"])

			r := mutate(t, h, "/api/pause", body)
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			require.Equal(t, map[string]any{"queue": "mail", "paused": true}, r.body)
			require.True(t, paused())
			require.Equal(t, true, queueRow(t, h, "mail")["paused"], "api/queues shows the pause")
			require.Equal(t, http.StatusOK, mutate(t, h, "/api/pause", body).status, "pausing a paused queue is no error")
			require.True(t, paused())

			r = mutate(t, h, "/api/resume", body)
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			require.Equal(t, map[string]any{"queue": "mail", "paused": false}, r.body)
			require.False(t, paused())
			require.Equal(t, false, queueRow(t, h, "mail")["paused"])
			require.Equal(t, http.StatusOK, mutate(t, h, "/api/resume", body).status, "resuming a running queue is no error")

			for _, c := range []struct {
				queue  any
				status int
				says   string
			}{
				{"", http.StatusBadRequest, "queue is required"},
				{"a b", http.StatusBadRequest, `pause: queue name "a b" must not contain spaces`},
				{"{x}", http.StatusBadRequest, `queue name "{x}" must not contain '{'`},
				{strings.Repeat("q", check.MaxNameBytes+1), http.StatusBadRequest, "the limit is"},
				{"nosuch", http.StatusNotFound, `pause: unknown queue "nosuch" in namespace "bq"`},
				{"mai", http.StatusNotFound, `unknown queue "mai"`},     // a prefix of a listed name
				{"mailx", http.StatusNotFound, `unknown queue "mailx"`}, // and one after it
				{7, http.StatusBadRequest, "the body is not a JSON object"},
			} {
				r := mutate(t, h, "/api/pause", map[string]any{"queue": c.queue})
				require.Equal(t, c.status, r.status, "%v: %s", c.queue, r.raw)
				require.Contains(t, r.body["error"], c.says, "%v", c.queue)
			}
			r = mutate(t, h, "/api/resume", map[string]any{"queue": "nosuch"})
			require.Equal(t, http.StatusNotFound, r.status, "%s", r.raw)
			require.Contains(t, r.body["error"], `resume: unknown queue "nosuch"`)
			require.Nil(t, queueRow(t, h, "nosuch"), "a refused pause registered the queue")
			other := mustQueue(t, p, "nosuch")
			v, err := other.Paused(ctx)
			require.NoError(t, err)
			require.False(t, v, "a refused pause paused the queue")
		})
	}
}

// Redis unreachable answers 503 like the other mutations, the error's text
// in the server's log only.
func TestPauseRedisDown(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}, Password: "s3cret"})
	var logged []error
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true, Timeout: 2 * time.Second,
		ErrorLog: func(_ *http.Request, err error) { logged = append(logged, err) }})
	for _, path := range []string{"/api/pause", "/api/resume"} {
		r := mutate(t, h, path, map[string]any{"queue": "mail"})
		requireUnavailable(t, r, path, "127.0.0.1")
	}
	require.NotEmpty(t, logged)
}
