package ratelimit

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// handlerSetup is a limiter of 2 per 3 s on miniredis with a fixed clock,
// and a next handler that counts what it serves.
type handlerSetup struct {
	l      *Limiter
	clk    *testutil.Clock
	served int
	next   http.Handler
}

func newHandlerSetup(t *testing.T) *handlerSetup {
	_, p := mini(t)
	s := &handlerSetup{clk: testutil.NewClock()}
	s.l = newLimiter(t, p, "handler", Config{Rate: 2, Period: 3 * time.Second, Now: s.clk.Now})
	s.next = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.served++
		w.WriteHeader(http.StatusNoContent)
	})
	return s
}

func (s *handlerSetup) handler(t *testing.T, opts ...HandlerOption) http.Handler {
	h, err := s.l.Handler(s.next, opts...)
	require.NoError(t, err)
	return h
}

func denyBody(t *testing.T, rec *httptest.ResponseRecorder) DenyBody {
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var b DenyBody
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &b), rec.Body.String())
	return b
}

// TestHandlerDefault: with WithKey alone, Handler limits as Middleware does
// and denies with 429 and a JSON body.
func TestHandlerDefault(t *testing.T) {
	s := newHandlerSetup(t)
	h := s.handler(t, WithKey(byUser))
	rec := serve(h, "ann")
	require.Equal(t, http.StatusNoContent, rec.Code)
	require.Equal(t, headers{"2", "1", "2", ""}, headersOf(rec))
	require.Equal(t, http.StatusNoContent, serve(h, "ann").Code)
	rec = serve(h, "ann")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, headers{"2", "0", "3", "2"}, headersOf(rec))
	require.Equal(t, DenyBody{Error: "rate limit exceeded", RetryAfter: 2, Limit: 2, Remaining: 0}, denyBody(t, rec))
	require.Equal(t, 2, s.served)
}

// TestHandlerEmptyKeyExempts: a key function returning "" exempts the
// request: served, no headers, nothing spent.
func TestHandlerEmptyKeyExempts(t *testing.T) {
	s := newHandlerSetup(t)
	h := s.handler(t, WithKey(byUser))
	for range 5 {
		rec := serve(h, "")
		require.Equal(t, http.StatusNoContent, rec.Code)
		require.Equal(t, headers{}, headersOf(rec))
	}
	require.Equal(t, 5, s.served)
	require.Equal(t, Stats{}, s.l.Stats(), "no decision was made")
}

// TestHandlerWithStatus: the default deny answer with another status.
func TestHandlerWithStatus(t *testing.T) {
	s := newHandlerSetup(t)
	h := s.handler(t, WithKey(byUser), WithStatus(http.StatusServiceUnavailable))
	serve(h, "ann")
	serve(h, "ann")
	rec := serve(h, "ann")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Equal(t, "2", rec.Header().Get("Retry-After"))
	require.Equal(t, int64(2), denyBody(t, rec).RetryAfter)
}

// TestHandlerWithDenyHandler: a custom deny handler gets the Result with the
// headers already set, writes its own answer, and next is not called.
func TestHandlerWithDenyHandler(t *testing.T) {
	s := newHandlerSetup(t)
	var got Result
	h := s.handler(t, WithKey(byUser), WithDenyHandler(func(w http.ResponseWriter, r *http.Request, res Result) {
		got = res
		require.Equal(t, "2", w.Header().Get("Retry-After"))
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte("slow down, " + byUser(r)))
	}))
	serve(h, "ann")
	serve(h, "ann")
	rec := serve(h, "ann")
	require.Equal(t, http.StatusTeapot, rec.Code)
	require.Equal(t, "slow down, ann", rec.Body.String())
	require.Equal(t, headers{"2", "0", "3", "2"}, headersOf(rec))
	require.Equal(t, Result{RetryAfter: 1500 * time.Millisecond, ResetAfter: 3 * time.Second, Limit: 2, Source: SourceRedis}, got)
	require.Equal(t, 2, s.served)
}

// TestHandlerWithSkip: skipped requests are served without a limit or
// headers, before the key function runs, and spend nothing.
func TestHandlerWithSkip(t *testing.T) {
	s := newHandlerSetup(t)
	keyCalls := 0
	h := s.handler(t,
		WithKey(func(r *http.Request) string { keyCalls++; return byUser(r) }),
		WithSkip(func(r *http.Request) bool { return r.Header.Get("X-Health") != "" }))
	for range 5 {
		req := httptest.NewRequest(http.MethodGet, "/healthz", nil)
		req.Header.Set("X-User", "ann")
		req.Header.Set("X-Health", "1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusNoContent, rec.Code)
		require.Equal(t, headers{}, headersOf(rec))
	}
	require.Zero(t, keyCalls)
	rec := serve(h, "ann")
	require.Equal(t, http.StatusNoContent, rec.Code)
	require.Equal(t, "1", rec.Header().Get("RateLimit-Remaining"), "the skipped requests spent nothing")
	require.Equal(t, 6, s.served)
}

// TestHandlerWithLimits: limits per request (a plan), with two windows; the
// headers are the deciding window's; limits AllowLimits refuses answer 500
// without calling next.
func TestHandlerWithLimits(t *testing.T) {
	s := newHandlerSetup(t)
	plans := map[string][]Limit{
		"free": {PerSecond(1), PerHour(2)},
		"pro":  {PerSecond(10)},
		"bad":  {{Rate: -1}},
	}
	h := s.handler(t, WithKey(byUser), WithLimits(func(r *http.Request) []Limit { return plans[r.Header.Get("X-User")] }))
	rec := serve(h, "free")
	require.Equal(t, http.StatusNoContent, rec.Code)
	require.Equal(t, headers{"1", "0", "1", ""}, headersOf(rec), "the second's window decides")
	s.clk.Advance(time.Second)
	rec = serve(h, "free")
	require.Equal(t, http.StatusNoContent, rec.Code)
	require.Equal(t, headers{"2", "0", "3599", ""}, headersOf(rec), "the hour's window decides")
	s.clk.Advance(time.Second)
	rec = serve(h, "free")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, headers{"2", "0", "3598", "1798"}, headersOf(rec))
	for i := range 10 {
		rec = serve(h, "pro")
		require.Equal(t, http.StatusNoContent, rec.Code, "pro request %d", i)
	}
	served := s.served
	rec = serve(h, "bad")
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	require.Equal(t, served, s.served)
}

// TestHandlerContextEnded: a client gone before Redis answers gets 503.
func TestHandlerContextEnded(t *testing.T) {
	s := newHandlerSetup(t)
	h := s.handler(t, WithKey(byUser))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
	req.Header.Set("X-User", "ann")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Zero(t, s.served)
}

// TestHandlerBadOptions: each option that cannot work is an error naming
// it.
func TestHandlerBadOptions(t *testing.T) {
	s := newHandlerSetup(t)
	deny := func(http.ResponseWriter, *http.Request, Result) {}
	for _, c := range []struct {
		next http.Handler
		opts []HandlerOption
		want []string
	}{
		{s.next, nil, []string{"WithKey is required"}},
		{s.next, []HandlerOption{WithKey(nil)}, []string{"WithKey: nil key function"}},
		{nil, []HandlerOption{WithKey(byUser)}, []string{"nil next handler"}},
		{s.next, []HandlerOption{WithKey(byUser), WithStatus(200)}, []string{"WithStatus: 200 is not a 4xx or 5xx status"}},
		{s.next, []HandlerOption{WithKey(byUser), WithStatus(600)}, []string{"WithStatus: 600 is not"}},
		{s.next, []HandlerOption{WithKey(byUser), WithStatus(0)}, []string{"WithStatus: 0 is not"}},
		{s.next, []HandlerOption{WithKey(byUser), WithStatus(503), WithDenyHandler(deny)}, []string{"WithStatus and WithDenyHandler together"}},
		{s.next, []HandlerOption{WithKey(byUser), WithDenyHandler(nil)}, []string{"WithDenyHandler: nil deny handler"}},
		{s.next, []HandlerOption{WithKey(byUser), WithSkip(nil)}, []string{"WithSkip: nil predicate"}},
		{s.next, []HandlerOption{WithKey(byUser), WithLimits(nil)}, []string{"WithLimits: nil limits function"}},
		{nil, []HandlerOption{WithStatus(-1)}, []string{"WithStatus: -1", "nil next handler", "WithKey is required"}},
	} {
		h, err := s.l.Handler(c.next, c.opts...)
		require.Nil(t, h)
		require.ErrorIs(t, err, ErrInvalidConfig)
		for _, w := range c.want {
			require.ErrorContains(t, err, w)
		}
		require.ErrorContains(t, err, "handler: Handler:")
	}
}
