package ratelimit

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHandlerDenyHandlerWithoutStatus: a deny handler that writes no status
// (it only logs, or writes a body without WriteHeader) must not turn a
// denial into 200 OK, which a client reads as served: the denial is 429
// unless the deny handler writes another status. Over a real server, where
// an unwritten status is 200.
func TestHandlerDenyHandlerWithoutStatus(t *testing.T) {
	for _, c := range []struct {
		name   string
		deny   func(w http.ResponseWriter, r *http.Request, res Result)
		status int
		body   string
		retry  string // the Retry-After header
	}{
		{"writes-nothing", func(http.ResponseWriter, *http.Request, Result) {}, http.StatusTooManyRequests, "", "2"},
		{"body-only", func(w http.ResponseWriter, _ *http.Request, _ Result) { _, _ = io.WriteString(w, "slow down") },
			http.StatusTooManyRequests, "slow down", "2"},
		{"flush-only", func(w http.ResponseWriter, _ *http.Request, _ Result) { _ = http.NewResponseController(w).Flush() },
			http.StatusTooManyRequests, "", "2"},
		{"own-status", func(w http.ResponseWriter, _ *http.Request, _ Result) { w.WriteHeader(http.StatusServiceUnavailable) },
			http.StatusServiceUnavailable, "", "2"},
		{"early-hints", func(w http.ResponseWriter, _ *http.Request, _ Result) { w.WriteHeader(http.StatusEarlyHints) },
			http.StatusTooManyRequests, "", "2"},
		// A deny handler that answers on the connection itself: nothing is
		// written after it.
		{"hijacks", func(w http.ResponseWriter, _ *http.Request, _ Result) {
			conn, bw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			_, _ = bw.WriteString("HTTP/1.1 418 I'm a teapot\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbrew")
			_ = bw.Flush()
			_ = conn.Close()
		}, http.StatusTeapot, "brew", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newHandlerSetup(t)
			h := s.handler(t, WithKey(byUser), WithDenyHandler(c.deny))
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			get := func() *http.Response {
				req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
				require.NoError(t, err)
				req.Header.Set("X-User", "ann")
				resp, err := srv.Client().Do(req)
				require.NoError(t, err)
				t.Cleanup(func() { _ = resp.Body.Close() })
				return resp
			}
			get()
			get()
			resp := get()
			require.Equal(t, c.status, resp.StatusCode)
			require.Equal(t, c.retry, resp.Header.Get("Retry-After"))
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, c.body, string(body))
			require.Equal(t, 2, s.served)
		})
	}
}

// TestHandlerDenyHandlerHijackFails: a deny handler whose Hijack fails (a
// recorder, or HTTP/2) and that then writes nothing still answers 429.
func TestHandlerDenyHandlerHijackFails(t *testing.T) {
	s := newHandlerSetup(t)
	var hijackErr error
	h := s.handler(t, WithKey(byUser), WithDenyHandler(func(w http.ResponseWriter, _ *http.Request, _ Result) {
		_, _, hijackErr = http.NewResponseController(w).Hijack()
	}))
	serve(h, "ann")
	serve(h, "ann")
	rec := serve(h, "ann")
	require.ErrorIs(t, hijackErr, http.ErrNotSupported)
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
}
