package ratelimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

func byUser(r *http.Request) string { return r.Header.Get("X-User") }

func serve(h http.Handler, user string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	if user != "" {
		req.Header.Set("X-User", user)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

type headers struct{ limit, remaining, reset, retryAfter string }

func headersOf(rec *httptest.ResponseRecorder) headers {
	h := rec.Header()
	return headers{h.Get("RateLimit-Limit"), h.Get("RateLimit-Remaining"), h.Get("RateLimit-Reset"), h.Get("Retry-After")}
}

func TestMiddleware(t *testing.T) {
	_, p := mini(t)
	clk := testutil.NewClock()
	// 2 per 3 s: 1.5 s per event, so seconds are rounded up.
	l := newLimiter(t, p, "http", Config{Rate: 2, Period: 3 * time.Second, Now: clk.Now})
	served := 0
	h := l.Middleware(byUser, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		w.WriteHeader(http.StatusNoContent)
	}))

	rec := serve(h, "ann")
	require.Equal(t, http.StatusNoContent, rec.Code)
	require.Equal(t, headers{"2", "1", "2", ""}, headersOf(rec)) // full again in 1.5 s
	rec = serve(h, "ann")
	require.Equal(t, http.StatusNoContent, rec.Code)
	require.Equal(t, headers{"2", "0", "3", ""}, headersOf(rec))
	rec = serve(h, "ann")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, headers{"2", "0", "3", "2"}, headersOf(rec)) // retry in 1.5 s
	require.Equal(t, 2, served, "a denied request does not reach the handler")

	clk.Advance(1500*time.Millisecond - time.Microsecond)
	rec = serve(h, "ann")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, headers{"2", "0", "2", "1"}, headersOf(rec), "1 µs rounds up to a second")
	clk.Advance(time.Microsecond)
	require.Equal(t, http.StatusNoContent, serve(h, "ann").Code)

	rec = serve(h, "bob")
	require.Equal(t, http.StatusNoContent, rec.Code, "keys are limited apart")
	require.Equal(t, "1", rec.Header().Get("RateLimit-Remaining"))

	// An empty key is exempt: served, no headers.
	for range 5 {
		rec = serve(h, "")
		require.Equal(t, http.StatusNoContent, rec.Code)
		require.Equal(t, headers{}, headersOf(rec))
	}
	require.Equal(t, 9, served)
}

func TestMiddlewareFallbackAndGoneClient(t *testing.T) {
	d := newDownSetup(t, Config{Rate: 1, Burst: 5, OnRedisError: FailClosed})
	d.stop(t)
	served := false
	h := d.l.Middleware(byUser, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true }))
	rec := serve(h, "ann")
	require.Equal(t, http.StatusTooManyRequests, rec.Code, "FailClosed answers while Redis is down")
	require.Equal(t, headers{"5", "0", "5", "1"}, headersOf(rec))
	require.False(t, served)

	// A client whose request context has ended gets 503, not the handler.
	_, p := mini(t)
	l := newLimiter(t, p, "gone", Config{Rate: 1})
	h = l.Middleware(byUser, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true }))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
	req.Header.Set("X-User", "ann")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.False(t, served)
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0", time.Nanosecond: "1", time.Second: "1", time.Second + 1: "2", 1<<63 - 1: "9223372037",
	} {
		require.Equal(t, want, seconds(d), d)
	}
}
