package admin

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/memwatch"
)

// The page's script, run under node with a minimal DOM (testdata/dom_shim.js)
// against a live handler: every view renders without an error, a job whose
// payload and error hold markup shows them as text, and no script element
// is ever created. (The real-browser test in Chromium is for later; this
// one needs node on PATH and is skipped without it.)
func TestPageScriptRenders(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH")
	}
	p := miniPool(t)
	q := mustQueue(t, p, "xss")
	evil := `<script>alert("x")</script>`
	ids := kill(t, p, q, [][]byte{[]byte(evil)})
	w, err := memwatch.New(memwatch.Config{})
	require.NoError(t, err)
	for range 3 {
		w.Tick()
	}
	fw := &fakeWorker{q: q}
	fw.s.StartDelay = histOf(40*time.Millisecond, 40*time.Millisecond, 100*time.Millisecond)
	srv := httptest.NewServer(mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true, Pools: map[string]PoolStats{"main": p}, Memwatch: w, Workers: []Worker{fw}}))
	defer srv.Close()

	js, err := static.ReadFile("static/app.js")
	require.NoError(t, err)
	appPath := filepath.Join(t.TempDir(), "app.js")
	require.NoError(t, os.WriteFile(appPath, js, 0o600))
	shim, err := filepath.Abs("testdata/dom_shim.js")
	require.NoError(t, err)
	hashes := []string{"#/queues", "#/queue/xss/dead", "#/queue/xss/ready", "#/job/xss/" + ids[0], "#/consumers", "#/components", "#/memory", "#/job/xss/nosuch"}
	hb, err := json.Marshal(hashes)
	require.NoError(t, err)
	out, err := exec.Command(nodeBin, shim, srv.URL+"/", string(hb), appPath).CombinedOutput()
	require.NoError(t, err, "%s", out)
	var got map[string]any
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)

	for _, h := range hashes[:7] {
		v := got[h].(map[string]any)
		require.Empty(t, v["error"], h)
		require.NotEmpty(t, v["text"], h)
	}
	require.Contains(t, got["#/queues"].(map[string]any)["text"], "xss")
	require.Contains(t, got["#/queue/xss/dead"].(map[string]any)["text"], evil)
	require.Contains(t, got["#/queue/xss/dead"].(map[string]any)["text"], "Purge dead letters")
	job := got["#/job/xss/"+ids[0]].(map[string]any)["text"].(string)
	require.Contains(t, job, evil)
	require.Contains(t, job, "boom <b>bold</b>")
	require.Contains(t, got["#/components"].(map[string]any)["text"], "Pool lanes")
	require.Contains(t, got["#/components"].(map[string]any)["text"], "dial errors")
	require.Contains(t, got["#/queues"].(map[string]any)["text"], "Workers in this process")
	require.Contains(t, got["#/queues"].(map[string]any)["text"], "enqueue→start p50 / p99")
	require.Contains(t, got["#/queues"].(map[string]any)["text"], "50 ms / 100 ms", "the fake worker's start delay quantiles (bucket bounds)")
	require.Contains(t, got["#/job/xss/nosuch"].(map[string]any)["error"], "not found")
	require.Contains(t, got["#/memory"].(map[string]any)["text"], "heap live")
	require.Contains(t, got["created"], "polyline", "the memory chart is drawn")
	require.NotContains(t, got["created"], "script", "the page never creates a script element")
	require.NotContains(t, got["created"], "b")
	require.Contains(t, got["#/queues"].(map[string]any)["text"], "active")
	require.Contains(t, got["#/queues"].(map[string]any)["text"], "pause", "the pause button, mutations allowed")

	// A paused queue shows its state, with a resume button only when
	// mutations are allowed.
	require.NoError(t, q.Pause(context.Background()))
	ro := httptest.NewServer(mustHandler(t, Config{Inspector: mustInspector(t, p)}))
	defer ro.Close()
	for url, mutations := range map[string]bool{srv.URL: true, ro.URL: false} {
		out, err := exec.Command(nodeBin, shim, url+"/", `["#/queues"]`, appPath).CombinedOutput()
		require.NoError(t, err, "%s", out)
		var got map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(out, &got), "%s", out)
		var view struct{ Text, Error string }
		require.NoError(t, json.Unmarshal(got["#/queues"], &view), "%s", out)
		text := view.Text
		require.Empty(t, view.Error)
		require.Contains(t, text, "paused")
		require.NotContains(t, text, "active")
		if mutations {
			require.Contains(t, text, "resume")
		} else {
			require.NotContains(t, text, "resume", "a read-only page shows no resume button")
		}
	}
}
