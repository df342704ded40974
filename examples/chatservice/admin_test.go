package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/admin"
	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/redistest"
)

// adminPost posts a mutation to the dashboard as its page does (JSON, the
// session's CSRF token, same origin).
func adminPost(t *testing.T, h *harness, path, body string) (int, []byte) {
	t.Helper()
	var sess struct {
		Token string `json:"csrf_token"`
	}
	h.getJSON("/admin/api/session", http.StatusOK, &sess)
	req, err := http.NewRequest(http.MethodPost, h.url+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(admin.CSRFHeader, sess.Token)
	req.Header.Set("Origin", h.url)
	resp, err := h.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

type deadPage struct {
	Jobs []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"jobs"`
}

// The dashboard is mounted at /admin/, read-only by default: it lists the
// dead chat and refuses to requeue it; with AdminMutations it requeues it.
func TestAdminDashboard(t *testing.T) {
	for _, mutations := range []bool{false, true} {
		name := map[bool]string{false: "read-only", true: "mutations"}[mutations]
		t.Run(name, func(t *testing.T) {
			m := redistest.Mini(t)
			h := startService(t, "redis://"+m.Addr(), func(c *Config) { c.FailRate = 1; c.AdminMutations = mutations })
			id := h.post("ada", "assistant", "<script>alert(1)</script>")
			require.Equal(t, chatapi.StatusFailed, h.reply(id).Status)

			noFollow := &http.Client{Timeout: wait, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := noFollow.Get(h.url + "/admin")
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusMovedPermanently, resp.StatusCode)
			require.Equal(t, "/admin/", resp.Header.Get("Location"))

			code, hdr, body := h.do(http.MethodGet, "/admin/", "")
			require.Equal(t, http.StatusOK, code)
			require.Contains(t, string(body), `src="app.js"`)
			require.Contains(t, hdr.Get("Content-Security-Policy"), "script-src 'self'")
			code, _, _ = h.do(http.MethodGet, "/admin/app.js", "")
			require.Equal(t, http.StatusOK, code)

			var sess struct {
				Mutations bool     `json:"mutations"`
				Pools     []string `json:"pools"`
				Caches    []string `json:"caches"`
				Memwatch  bool     `json:"memwatch"`
			}
			h.getJSON("/admin/api/session", http.StatusOK, &sess)
			require.Equal(t, mutations, sess.Mutations)
			require.Equal(t, []string{"main"}, sess.Pools)
			require.Equal(t, []string{"agents", "replies"}, sess.Caches)
			require.True(t, sess.Memwatch)

			var qs struct {
				Queues []struct {
					Name string `json:"name"`
					Dead int64  `json:"dead"`
				} `json:"queues"`
			}
			require.Eventually(t, func() bool {
				code, _, body, err := h.try(http.MethodGet, "/admin/api/queues", "")
				if err != nil || code != http.StatusOK || json.Unmarshal(body, &qs) != nil {
					return false
				}
				for _, q := range qs.Queues {
					if q.Name == chatapi.QueueChat && q.Dead == 1 {
						return true
					}
				}
				return false
			}, wait, 10*time.Millisecond)

			var dead deadPage
			h.getJSON("/admin/api/jobs?queue="+chatapi.QueueChat+"&state=dead", http.StatusOK, &dead)
			require.Len(t, dead.Jobs, 1)
			require.Equal(t, "dead", dead.Jobs[0].State)
			code, _, body = h.do(http.MethodGet, "/admin/api/job?queue="+chatapi.QueueChat+"&id="+dead.Jobs[0].ID, "")
			require.Equal(t, http.StatusOK, code, "%s", body)
			require.NotContains(t, string(body), "<script>", "the payload comes back escaped")
			for _, path := range []string{"/admin/api/stats", "/admin/api/memwatch", "/admin/api/consumers"} {
				code, _, body = h.do(http.MethodGet, path, "")
				require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
			}
			// The service's three workers, marked as this process's; the chat
			// worker counted the dead chat.
			var workers struct {
				Scope   string `json:"scope"`
				Workers []struct {
					Queue string `json:"queue"`
					Dead  uint64 `json:"dead"`
				} `json:"workers"`
			}
			h.getJSON("/admin/api/workers", http.StatusOK, &workers)
			require.Equal(t, "this process", workers.Scope)
			require.Len(t, workers.Workers, chatapi.NumQueues+1)
			for i, name := range chatapi.AllQueues() {
				require.Equal(t, name, workers.Workers[i].Queue)
			}
			require.EqualValues(t, 1, workers.Workers[0].Dead, "the chat worker's dead count")

			code, body = adminPost(t, h, "/admin/api/requeue", `{"queue":"`+chatapi.QueueChat+`","ids":["`+dead.Jobs[0].ID+`"]}`)
			if !mutations {
				require.Equal(t, http.StatusForbidden, code, "%s", body)
				require.Contains(t, string(body), "read_only")
				return
			}
			require.Equal(t, http.StatusOK, code, "%s", body)
			require.Contains(t, string(body), `"requeued":1`)
		})
	}
}
