package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
	"github.com/bounded-go/bounded/ratelimit"
)

func TestNewRejectsBadConfig(t *testing.T) {
	p := miniPool(t)
	in := mustInspector(t, p)
	for name, cfg := range map[string]Config{
		"no inspector":     {},
		"negative timeout": {Inspector: in, Timeout: -time.Second},
		"huge timeout":     {Inspector: in, Timeout: time.Hour},
		"nil pool":         {Inspector: in, Pools: map[string]PoolStats{"main": nil}},
		"nil cache":        {Inspector: in, Caches: map[string]CacheStats{"c": nil}},
		"nil limiter":      {Inspector: in, Limiters: map[string]LimiterStats{"l": nil}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
	_, err := New(Config{Timeout: -1})
	require.ErrorContains(t, err, "Config.Inspector")
	require.ErrorContains(t, err, "Config.Timeout")
}

// Each handler has its own token, 32 random bytes.
func TestTokensDiffer(t *testing.T) {
	in := mustInspector(t, miniPool(t))
	a, b := mustHandler(t, Config{Inspector: in}), mustHandler(t, Config{Inspector: in})
	ta, tb := token(t, a), token(t, b)
	require.Len(t, ta, 64)
	require.NotEqual(t, ta, tb)
}

func TestPageAndAssets(t *testing.T) {
	h := mustHandler(t, Config{Inspector: mustInspector(t, miniPool(t))})
	for path, ctype := range map[string]string{
		"/":           "text/html; charset=utf-8",
		"/index.html": "text/html; charset=utf-8",
		"/app.js":     "text/javascript; charset=utf-8",
		"/style.css":  "text/css; charset=utf-8",
	} {
		r := get(t, h, path)
		require.Equal(t, http.StatusOK, r.status, path)
		require.Equal(t, ctype, r.header.Get("Content-Type"), path)
		require.NotEmpty(t, r.raw, path)
		csp := r.header.Get("Content-Security-Policy")
		require.Contains(t, csp, "script-src 'self'", path)
		require.NotContains(t, csp, "unsafe", path)
		require.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"))
		require.Equal(t, "DENY", r.header.Get("X-Frame-Options"))
	}
	page := string(get(t, h, "/").raw)
	require.Contains(t, page, `src="app.js"`)
	require.NotContains(t, page, "http://")
	require.NotContains(t, page, "https://", "no CDN")

	r := get(t, h, "/nope.js")
	require.Equal(t, http.StatusNotFound, r.status)
	require.Equal(t, "not_found", r.body["code"])
	r = get(t, h, "/api/nope")
	require.Equal(t, http.StatusNotFound, r.status)
	r = call(t, h, http.MethodPost, "/", nil, nil)
	require.Equal(t, http.StatusMethodNotAllowed, r.status)
	r = call(t, h, http.MethodHead, "/app.js", nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Empty(t, r.raw)
}

// The page's scripts never parse server data as markup: no innerHTML or
// its relatives anywhere in the embedded assets, and text goes in with
// textContent or text nodes.
func TestAssetsNeverParseMarkup(t *testing.T) {
	for _, name := range []string{"static/app.js", "static/index.html"} {
		b, err := static.ReadFile(name)
		require.NoError(t, err)
		src := string(b)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "DOMParser", "createContextualFragment", "javascript:", "style="} {
			require.NotContains(t, src, bad, "%s uses %s", name, bad)
		}
	}
	js, err := static.ReadFile("static/app.js")
	require.NoError(t, err)
	require.Contains(t, string(js), "textContent")
	require.Contains(t, string(js), "createTextNode")
	require.Contains(t, string(js), `"X-Bounded-CSRF"`)
	require.Equal(t, "X-Bounded-CSRF", CSRFHeader)
}

// Every read endpoint, on miniredis and a real server.
func TestReadAPI(t *testing.T) {
	for name, np := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t)
			q := mustQueue(t, p, "emails")
			ids := kill(t, p, q, [][]byte{[]byte("d1"), []byte("d2"), []byte("d3")})
			readyID, err := q.Enqueue(ctx, []byte(`{"to":"a@example.com"}`))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte("later"), queue.Delay(time.Hour))
			require.NoError(t, err)

			var calls atomic.Int64
			h := mustHandler(t, Config{
				Inspector: mustInspector(t, p),
				Pools:     map[string]PoolStats{"main": p},
				Authorize: func(*http.Request) error { calls.Add(1); return nil },
			})

			s := get(t, h, "/api/session")
			require.Equal(t, http.StatusOK, s.status)
			require.Equal(t, false, s.body["mutations"])
			require.Equal(t, []any{"main"}, s.body["pools"])
			require.Equal(t, float64(queue.MaxPageLimit), s.body["max_limit"])

			r := get(t, h, "/api/queues")
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			qs := r.body["queues"].([]any)
			require.Len(t, qs, 1)
			qi := qs[0].(map[string]any)
			require.Equal(t, "emails", qi["name"])
			require.Equal(t, float64(3), qi["dead"])
			require.Equal(t, float64(1), qi["ready"])
			require.Equal(t, float64(1), qi["delayed"])

			r = get(t, h, "/api/jobs?queue=emails&state=dead")
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			dead := jobsOf(r)
			require.Len(t, dead, 3)
			var deadIDs []string
			for _, j := range dead {
				deadIDs = append(deadIDs, j["id"].(string))
				require.Equal(t, "dead", j["state"])
				require.NotEmpty(t, j["handle"])
				require.NotEmpty(t, j["died_at"])
			}
			require.ElementsMatch(t, ids, deadIDs)

			r = get(t, h, "/api/jobs?queue=emails&state=ready")
			require.Equal(t, http.StatusOK, r.status)
			ready := jobsOf(r)
			require.Len(t, ready, 1)
			require.Equal(t, readyID, ready[0]["id"])
			require.Equal(t, `{"to":"a@example.com"}`, ready[0]["payload"], "the payload comes back as text")

			r = get(t, h, "/api/jobs?queue=emails&state=delayed")
			require.Len(t, jobsOf(r), 1)
			require.NotEmpty(t, jobsOf(r)[0]["due"])
			r = get(t, h, "/api/jobs?queue=emails&state=running")
			require.Equal(t, http.StatusOK, r.status)
			require.Empty(t, r.body["jobs"])

			r = get(t, h, "/api/job?queue=emails&id="+url.QueryEscape(ids[0]))
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			require.Equal(t, "dead", r.body["state"])
			require.Equal(t, ids[0], r.body["id"])
			require.Equal(t, "d1", r.body["payload"])
			require.Contains(t, r.body["last_error"], "boom")

			r = get(t, h, "/api/job?queue=emails&id=nosuchjob")
			require.Equal(t, http.StatusNotFound, r.status, "%s", r.raw)
			require.Equal(t, "not_found", r.body["code"])

			r = get(t, h, "/api/consumers")
			require.Equal(t, http.StatusOK, r.status)
			require.NotNil(t, r.body["consumers"])

			r = get(t, h, "/api/stats")
			require.Equal(t, http.StatusOK, r.status)
			main := r.body["pools"].(map[string]any)["main"].(map[string]any)
			require.Contains(t, main, "request")
			require.Equal(t, map[string]any{}, r.body["caches"])

			r = get(t, h, "/api/memwatch")
			require.Equal(t, http.StatusNotFound, r.status)
			require.Equal(t, "not_configured", r.body["code"])

			require.Equal(t, int64(11), calls.Load(), "Authorize is called on every request")
		})
	}
}

func TestStatsOfComponents(t *testing.T) {
	p := miniPool(t)
	c, err := cache.New[string](p, "users", cache.Config[string]{})
	require.NoError(t, err)
	l, err := ratelimit.New(p, "api", ratelimit.Config{Rate: 10, Period: time.Second})
	require.NoError(t, err)
	w, err := memwatch.New(memwatch.Config{})
	require.NoError(t, err)
	w.Tick()
	w.Tick()
	h := mustHandler(t, Config{
		Inspector: mustInspector(t, p), Pools: map[string]PoolStats{"main": p},
		Caches: map[string]CacheStats{"users": c}, Limiters: map[string]LimiterStats{"api": l}, Memwatch: w,
	})
	r := get(t, h, "/api/stats")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body["caches"], "users")
	require.Contains(t, r.body["caches"].(map[string]any)["users"], "local_hits")
	require.Contains(t, r.body["limiters"].(map[string]any)["api"], "allowed")

	r = get(t, h, "/api/memwatch")
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	require.Len(t, r.body["history"], 2)
	require.Equal(t, []any{}, r.body["alerts"])
	require.Contains(t, r.body["latest"], "heap_live_bytes")
	s := get(t, h, "/api/session")
	require.Equal(t, true, s.body["memwatch"])
	require.Equal(t, []any{"users"}, s.body["caches"])
}

func TestLimitsAndBadQueries(t *testing.T) {
	p := miniPool(t)
	ctx := context.Background()
	for i := range 5 {
		q := mustQueue(t, p, fmt.Sprintf("q%d", i))
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
	}
	q := mustQueue(t, p, "many")
	pays := make([][]byte, 7)
	for i := range pays {
		pays[i] = []byte(fmt.Sprint(i))
	}
	_, err := q.EnqueueBatch(ctx, pays)
	require.NoError(t, err)
	h := mustHandler(t, Config{Inspector: mustInspector(t, p)})

	for _, bad := range []string{"0", "-1", "1001", "abc", "1e3", " 5", "99999999999999999999"} {
		for _, path := range []string{"/api/queues?limit=", "/api/jobs?queue=many&state=ready&limit="} {
			r := get(t, h, path+url.QueryEscape(bad))
			require.Equal(t, http.StatusBadRequest, r.status, "%s%s", path, bad)
			require.Contains(t, r.body["error"], "limit must be")
		}
	}
	require.Equal(t, http.StatusOK, get(t, h, "/api/queues?limit=1000").status)
	require.Equal(t, http.StatusOK, get(t, h, "/api/jobs?queue=many&state=ready&limit=1000").status)

	// Paging by 1 lists every queue once; by 3 every job once.
	var names []string
	cur := ""
	for range 100 {
		r := get(t, h, "/api/queues?limit=1&cursor="+url.QueryEscape(cur))
		require.Equal(t, http.StatusOK, r.status)
		for _, q := range r.body["queues"].([]any) {
			names = append(names, q.(map[string]any)["name"].(string))
		}
		next, _ := r.body["next"].(string)
		if next == "" {
			break
		}
		cur = next
	}
	require.Equal(t, []string{"many", "q0", "q1", "q2", "q3", "q4"}, names)
	var got []string
	cur = ""
	for range 100 {
		r := get(t, h, "/api/jobs?queue=many&state=ready&limit=3&cursor="+url.QueryEscape(cur))
		require.Equal(t, http.StatusOK, r.status)
		require.LessOrEqual(t, len(jobsOf(r)), 3)
		for _, j := range jobsOf(r) {
			got = append(got, j["payload"].(string))
		}
		next, _ := r.body["next"].(string)
		if next == "" {
			break
		}
		cur = next
	}
	require.Equal(t, []string{"0", "1", "2", "3", "4", "5", "6"}, got)

	for path, want := range map[string]string{
		"/api/jobs?state=ready":                                            "queue is required",
		"/api/jobs?queue=many":                                             "state must be",
		"/api/jobs?queue=many&state=done":                                  "state must be",
		"/api/jobs?queue=many&state=dead&cursor=junk":                      "",
		"/api/jobs?queue=many&state=dead&cursor=" + url.QueryEscape(cur):   "", // a ready cursor
		"/api/job?queue=many":                                              "id is required",
		"/api/job?id=x":                                                    "queue is required",
		"/api/jobs?queue=" + strings.Repeat("n", 100_000) + "&state=ready": "",
	} {
		r := get(t, h, path)
		require.Equal(t, http.StatusBadRequest, r.status, "%.80s: %s", path, r.raw)
		require.Equal(t, "bad_request", r.body["code"])
		require.Contains(t, r.body["error"], want)
	}
}

// A payload holding markup comes back as JSON-escaped text: the body
// never holds "<script>", and decoded it is the payload, byte for byte.
func TestScriptPayloadIsEscapedData(t *testing.T) {
	p := miniPool(t)
	q := mustQueue(t, p, "xss")
	evil := `<script>alert("x")</script><img src=x onerror=alert(1)>&amp;`
	ids := kill(t, p, q, [][]byte{[]byte(evil)})
	h := mustHandler(t, Config{Inspector: mustInspector(t, p)})
	for _, path := range []string{"/api/jobs?queue=xss&state=dead", "/api/job?queue=xss&id=" + ids[0]} {
		r := get(t, h, path)
		require.Equal(t, http.StatusOK, r.status)
		raw := string(r.raw)
		require.NotContains(t, raw, "<script>", path)
		require.NotContains(t, raw, "<img", path)
		require.NotContains(t, raw, "<b>", path) // the error text too
		require.Contains(t, raw, `\u003cscript\u003e`, path)
		require.Equal(t, "application/json; charset=utf-8", r.header.Get("Content-Type"))
		require.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"))
	}
	r := get(t, h, "/api/job?queue=xss&id="+ids[0])
	require.Equal(t, evil, r.body["payload"])
	require.Contains(t, r.body["last_error"], "boom <b>bold</b>")
}

// Previews are capped at PreviewBytes, with the size and a flag; bytes that
// are not UTF-8 become U+FFFD instead of breaking the JSON.
func TestPayloadPreviewCapped(t *testing.T) {
	p := miniPool(t)
	q := mustQueue(t, p, "big")
	large := []byte(strings.Repeat("é", 5000)) // 10,000 bytes, a rune cut at the cap
	mid := []byte(strings.Repeat("m", 2000))   // inline, over the preview
	ids := kill(t, p, q, [][]byte{large, {0xff, 0xfe, 'o', 'k'}, {}, mid})
	h := mustHandler(t, Config{Inspector: mustInspector(t, p)})

	r := get(t, h, "/api/job?queue=big&id="+ids[0])
	require.Equal(t, http.StatusOK, r.status)
	pl := r.body["payload"].(string)
	require.LessOrEqual(t, len(pl), PreviewBytes+3)
	require.True(t, strings.HasPrefix(pl, strings.Repeat("é", PreviewBytes/2-1)))
	require.Equal(t, true, r.body["payload_truncated"])
	require.Equal(t, float64(len(large)), r.body["payload_size"])

	r = get(t, h, "/api/job?queue=big&id="+ids[1])
	require.Equal(t, "\uFFFDok", r.body["payload"])
	r = get(t, h, "/api/job?queue=big&id="+ids[2])
	require.Equal(t, "", r.body["payload"])
	require.Equal(t, float64(0), r.body["payload_size"])

	r = get(t, h, "/api/jobs?queue=big&state=dead&limit=10")
	for _, j := range jobsOf(r) {
		require.LessOrEqual(t, len(j["payload"].(string)), PreviewBytes+3)
		if j["id"] == ids[0] { // over 4 KiB: kept apart, not read by a listing
			require.Equal(t, true, j["payload_apart"])
			require.Equal(t, float64(len(large)), j["payload_size"])
		}
		if j["id"] == ids[3] {
			require.Equal(t, true, j["payload_truncated"])
			require.Len(t, j["payload"], PreviewBytes)
			require.Equal(t, float64(2000), j["payload_size"])
		}
	}

	require.Equal(t, "abc", must(preview([]byte("abc"), 3)))
	s, cut := preview([]byte("abcd"), 3)
	require.Equal(t, "abc", s)
	require.True(t, cut)
}

func must(s string, _ bool) string { return s }

func TestReadOnlyRefusesMutations(t *testing.T) {
	p := miniPool(t)
	q := mustQueue(t, p, "ro")
	ids := kill(t, p, q, [][]byte{[]byte("x")})
	h := mustHandler(t, Config{Inspector: mustInspector(t, p)})
	for _, path := range []string{"/api/requeue", "/api/delete", "/api/purge", "/api/cancel"} {
		r := mutate(t, h, path, map[string]any{"queue": "ro", "ids": ids, "id": ids[0], "handle": "x"})
		require.Equal(t, http.StatusForbidden, r.status, path)
		require.Equal(t, "read_only", r.body["code"])
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			r = call(t, h, m, path, nil, nil)
			require.Equal(t, http.StatusMethodNotAllowed, r.status, "%s %s", m, path)
			require.Equal(t, "POST", r.header.Get("Allow"))
		}
	}
	for _, path := range []string{"/api/queues", "/api/jobs", "/api/job", "/api/consumers", "/api/stats", "/api/session", "/api/memwatch"} {
		r := call(t, h, http.MethodPost, path, map[string]any{}, map[string]string{"Content-Type": "application/json"})
		require.Equal(t, http.StatusMethodNotAllowed, r.status, path)
	}
	s, err := q.Stats(context.Background())
	require.NoError(t, err)
	require.Equal(t, int64(1), s.Dead, "nothing changed")
}

func TestMutationCSRFAndOrigin(t *testing.T) {
	p := miniPool(t)
	q := mustQueue(t, p, "csrf")
	ids := kill(t, p, q, [][]byte{[]byte("x")})
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true})
	tok := token(t, h)
	body := map[string]any{"queue": "csrf", "ids": ids}
	ok := map[string]string{"Content-Type": "application/json", CSRFHeader: tok}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range ok {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for name, c := range map[string]struct {
		hdr    map[string]string
		status int
		code   string
	}{
		"no token":          {with(CSRFHeader, ""), http.StatusForbidden, "csrf"},
		"wrong token":       {with(CSRFHeader, strings.Repeat("0", 64)), http.StatusForbidden, "csrf"},
		"token prefix":      {with(CSRFHeader, tok[:10]), http.StatusForbidden, "csrf"},
		"foreign origin":    {with("Origin", "https://evil.example"), http.StatusForbidden, "cross_origin"},
		"null origin":       {with("Origin", "null"), http.StatusForbidden, "cross_origin"},
		"port differs":      {with("Origin", "http://example.com:8080"), http.StatusForbidden, "cross_origin"},
		"cross-site fetch":  {with("Sec-Fetch-Site", "cross-site"), http.StatusForbidden, "cross_origin"},
		"same-site fetch":   {with("Sec-Fetch-Site", "same-site"), http.StatusForbidden, "cross_origin"},
		"form post":         {with("Content-Type", "application/x-www-form-urlencoded"), http.StatusUnsupportedMediaType, "content_type"},
		"no content type":   {with("Content-Type", ""), http.StatusUnsupportedMediaType, "content_type"},
		"text/plain beacon": {with("Content-Type", "text/plain"), http.StatusUnsupportedMediaType, "content_type"},
	} {
		r := call(t, h, http.MethodPost, "/api/requeue", body, c.hdr)
		require.Equal(t, c.status, r.status, "%s: %s", name, r.raw)
		require.Equal(t, c.code, r.body["code"], name)
	}
	s, err := q.Stats(context.Background())
	require.NoError(t, err)
	require.Equal(t, int64(1), s.Dead, "no refused request changed anything")

	// Same origin (or no Origin, a non-browser client) with the token passes.
	r := call(t, h, http.MethodPost, "/api/requeue", body, with("Origin", "http://EXAMPLE.com"))
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	require.Equal(t, float64(1), r.body["requeued"])
}

func TestAuthorizeRefuses(t *testing.T) {
	p := miniPool(t)
	var seen []string
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true, Authorize: func(r *http.Request) error {
		seen = append(seen, r.Method+" "+r.URL.Path)
		if r.Header.Get("Authorization") != "Bearer ok" {
			return errors.New("need a bearer token")
		}
		return nil
	}})
	for _, path := range []string{"/", "/app.js", "/api/session", "/api/queues", "/api/nope"} {
		r := get(t, h, path)
		require.Equal(t, http.StatusForbidden, r.status, path)
		require.Equal(t, "forbidden", r.body["code"])
		require.Contains(t, r.body["error"], "need a bearer token")
		require.NotContains(t, string(r.raw), "csrf_token")
	}
	r := call(t, h, http.MethodPost, "/api/purge", map[string]any{"queue": "x"}, map[string]string{"Content-Type": "application/json"})
	require.Equal(t, http.StatusForbidden, r.status)
	require.Equal(t, "forbidden", r.body["code"])
	r = call(t, h, http.MethodGet, "/api/queues", nil, map[string]string{"Authorization": "Bearer ok"})
	require.Equal(t, http.StatusOK, r.status)
	require.Len(t, seen, 7)
}

func TestMutations(t *testing.T) {
	for name, np := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t)
			q := mustQueue(t, p, "ops")
			pays := make([][]byte, 6)
			for i := range pays {
				pays[i] = []byte(fmt.Sprint("job", i))
			}
			ids := kill(t, p, q, pays)
			h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true})
			require.Equal(t, true, get(t, h, "/api/session").body["mutations"])
			stats := func() queue.Stats {
				s, err := q.Stats(ctx)
				require.NoError(t, err)
				return s
			}

			// requeue two, one unknown: the known ones move, the answer says so.
			r := mutate(t, h, "/api/requeue", map[string]any{"queue": "ops", "ids": []string{ids[0], ids[1], "nosuch"}})
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			require.Equal(t, float64(2), r.body["requeued"])
			require.Contains(t, r.body["error"], "nosuch")
			require.Equal(t, int64(2), stats().Ready)
			require.Equal(t, int64(4), stats().Dead)
			r = mutate(t, h, "/api/requeue", map[string]any{"queue": "ops", "ids": []string{"nosuch"}})
			require.Equal(t, http.StatusNotFound, r.status, "%s", r.raw)

			// delete a dead letter by its handle; again: gone.
			dead := jobsOf(get(t, h, "/api/jobs?queue=ops&state=dead&limit=1"))
			require.Len(t, dead, 1)
			r = mutate(t, h, "/api/delete", map[string]any{"queue": "ops", "handle": dead[0]["handle"]})
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			require.Equal(t, int64(3), stats().Dead)
			r = mutate(t, h, "/api/delete", map[string]any{"queue": "ops", "handle": dead[0]["handle"]})
			require.Equal(t, http.StatusConflict, r.status, "%s", r.raw)
			require.Equal(t, "gone", r.body["code"])
			r = mutate(t, h, "/api/delete", map[string]any{"queue": "ops", "handle": "garbage"})
			require.Equal(t, http.StatusBadRequest, r.status, "%s", r.raw)

			// delete a ready job by its handle.
			ready := jobsOf(get(t, h, "/api/jobs?queue=ops&state=ready&limit=1"))
			r = mutate(t, h, "/api/delete", map[string]any{"queue": "ops", "handle": ready[0]["handle"]})
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			require.Equal(t, int64(1), stats().Ready)

			// cancel the other ready job; cancel of a dead one is a conflict.
			ready = jobsOf(get(t, h, "/api/jobs?queue=ops&state=ready"))
			r = mutate(t, h, "/api/cancel", map[string]any{"queue": "ops", "id": ready[0]["id"]})
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			require.Equal(t, int64(0), stats().Ready)
			dead = jobsOf(get(t, h, "/api/jobs?queue=ops&state=dead&limit=1"))
			r = mutate(t, h, "/api/cancel", map[string]any{"queue": "ops", "id": dead[0]["id"]})
			require.Equal(t, http.StatusConflict, r.status, "%s", r.raw)
			require.Equal(t, "finished", r.body["code"])

			// purge the rest.
			r = mutate(t, h, "/api/purge", map[string]any{"queue": "ops"})
			require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
			require.Equal(t, float64(3), r.body["purged"])
			require.Equal(t, int64(0), stats().Dead)
			r = mutate(t, h, "/api/purge", map[string]any{"queue": "ops"})
			require.Equal(t, float64(0), r.body["purged"])
		})
	}
}

func TestMutationBadBodies(t *testing.T) {
	p := miniPool(t)
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), AllowMutations: true})
	tooMany := make([]string, MaxRequeueIDs+1)
	for i := range tooMany {
		tooMany[i] = "x"
	}
	for name, c := range map[string]struct {
		path   string
		body   any
		status int
		want   string
	}{
		"no queue":        {"/api/purge", map[string]any{}, 400, "queue is required"},
		"unknown field":   {"/api/purge", map[string]any{"queue": "a", "extra": 1}, 400, "extra"},
		"not an object":   {"/api/purge", []int{1}, 400, "not a JSON object"},
		"no ids":          {"/api/requeue", map[string]any{"queue": "a"}, 400, "ids must hold 1 to"},
		"too many ids":    {"/api/requeue", map[string]any{"queue": "a", "ids": tooMany}, 400, "got 1001"},
		"no handle":       {"/api/delete", map[string]any{"queue": "a"}, 400, "handle is required"},
		"no id":           {"/api/cancel", map[string]any{"queue": "a"}, 400, "id is required"},
		"too large":       {"/api/purge", map[string]any{"queue": strings.Repeat("a", MaxBody)}, 413, "over 65536"},
		"bad queue name":  {"/api/purge", map[string]any{"queue": strings.Repeat("a", 10_000)}, 400, ""},
		"handle of other": {"/api/delete", map[string]any{"queue": "a", "handle": strings.Repeat("z", 100)}, 400, ""},
	} {
		r := mutate(t, h, c.path, c.body)
		require.Equal(t, c.status, r.status, "%s: %s", name, r.raw)
		require.Contains(t, r.body["error"], c.want, name)
	}
	tok := token(t, h)
	r := call(t, h, http.MethodPost, "/api/purge", nil, map[string]string{"Content-Type": "application/json", CSRFHeader: tok})
	require.Equal(t, http.StatusBadRequest, r.status, "empty body")
}

// A Redis that cannot be reached answers 503 without the error's text
// (which may name servers); the text goes to ErrorLog.
func TestRedisErrorsDoNotLeak(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}, Password: "s3cret"})
	var logged []error
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), Timeout: 2 * time.Second,
		ErrorLog: func(_ *http.Request, err error) { logged = append(logged, err) }})
	r := get(t, h, "/api/queues")
	requireUnavailable(t, r, "/api/queues", "127.0.0.1")
	require.Len(t, logged, 1)
	s := get(t, h, "/api/session")
	require.NotContains(t, string(s.raw), "127.0.0.1")
	require.NotContains(t, string(s.raw), "s3cret")
}
