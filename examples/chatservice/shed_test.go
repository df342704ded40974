package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/queue"
)

// fakeBacklog is a shedder's reading under the test's control.
type fakeBacklog struct {
	mu    sync.Mutex
	r     backlogReading
	err   error
	reads int
}

func (f *fakeBacklog) set(chat int64, processed uint64) {
	f.mu.Lock()
	f.r.backlog[0], f.r.processed = chat, processed
	f.mu.Unlock()
}

// setBusy sets the chat handlers running a job, of 5.
func (f *fakeBacklog) setBusy(n int64) {
	f.mu.Lock()
	f.r.busy = n
	f.mu.Unlock()
}

func (f *fakeBacklog) read(context.Context) (backlogReading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.r, f.err
}

func newTestShedder(budget time.Duration, maxLen [chatapi.NumQueues]int64) (*shedder, *fakeBacklog, *testutil.Clock) {
	f := &fakeBacklog{r: backlogReading{busy: 5, slots: 5}} // every handler busy
	clk := testutil.NewClock()
	s := newShedder(budget, maxLen, f.read)
	s.now = clk.Now
	return s, f, clk
}

func TestShedder_WaitBudget(t *testing.T) {
	ctx := context.Background()
	s, f, clk := newTestShedder(10*time.Millisecond, [3]int64{})

	// No rate measured yet: a backlog alone sheds nothing.
	f.set(500, 0)
	assert.False(t, s.admit(ctx).shed, "no drain rate known yet")

	// Busy throughout a second, draining 1,000 jobs: 1,000/s.
	clk.Advance(time.Second)
	f.set(500, 1000)
	d := s.admit(ctx)
	require.True(t, d.shed, "501 jobs at 1,000/s (the chat admitted above is not over) is 501ms, over 10ms")
	assert.Equal(t, chatapi.CodeOverloaded, d.code)
	assert.Equal(t, 491*time.Millisecond, d.retryAfter)
	assert.Contains(t, d.reason, "over the budget of 10ms")
	assert.Contains(t, s.shedding(), "shedding load")

	// Backlog down to 5 jobs: 5ms, admitted; the admissions count until
	// the next reading: after 5 more, 10 ahead is 10ms, at the budget, and
	// the next is over it.
	clk.Advance(shedRefresh)
	for range s.admitted.Load() {
		s.done() // the requests admitted so far are over
	}
	f.set(5, 1020)
	for i := range 6 {
		assert.False(t, s.admit(ctx).shed, "admission %d", i)
	}
	assert.True(t, s.admit(ctx).shed, "11 ahead at 1,000/s is 11ms")
	// The drain since the reading makes room again.
	clk.Advance(5 * time.Millisecond)
	assert.False(t, s.admit(ctx).shed, "5ms later 5 of them are gone")

	// The cached reading serves requests within shedRefresh.
	reads := f.reads
	s.admit(ctx)
	assert.Equal(t, reads, f.reads)

	// Health stays degraded for shedHold after the last shed, then clears.
	clk.Advance(shedHold + time.Millisecond)
	f.setBusy(0)
	f.set(0, 2000)
	assert.False(t, s.admit(ctx).shed)
	assert.Empty(t, s.shedding())
}

// A chat admitted before a reading and not queued yet is not in Redis: it
// counts until its request is over.
func TestShedder_CountsAdmittedNotYetQueued(t *testing.T) {
	ctx := context.Background()
	s, f, clk := newTestShedder(10*time.Millisecond, [3]int64{})
	s.admit(ctx)
	s.done()
	clk.Advance(time.Second)
	f.set(0, 1000) // 1,000/s
	for range 8 {
		require.False(t, s.admit(ctx).shed) // in flight: not done, not in Redis
	}
	clk.Advance(shedRefresh)
	f.set(0, 1000)
	for range 3 {
		assert.False(t, s.admit(ctx).shed, "8 in flight + this one is 9ms; 10ms; 11ms is over")
	}
	assert.True(t, s.admit(ctx).shed, "11 ahead at 1,000/s is 11ms")
	for range 11 {
		s.done() // queued: the next reading sees them in Redis
	}
	clk.Advance(shedRefresh)
	f.set(11, 1000)
	assert.True(t, s.admit(ctx).shed)
	assert.Equal(t, int64(11), s.stats().Backlog[0], "counted once, from Redis")
}

func TestShedder_RateFromIdleWindowsIsALowerBound(t *testing.T) {
	ctx := context.Background()
	s, f, clk := newTestShedder(10*time.Millisecond, [3]int64{})
	f.set(100, 0)
	s.admit(ctx)
	clk.Advance(time.Second)
	f.set(100, 2000) // busy throughout: 2,000/s
	s.admit(ctx)
	// An idle minute measures almost nothing: the rate stays 2,000/s, so a
	// burst after it is not shed as if the workers had stalled.
	clk.Advance(time.Minute)
	f.setBusy(0)
	f.set(0, 2010)
	s.admit(ctx)
	clk.Advance(shedRefresh)
	f.set(15, 2010)
	assert.False(t, s.admit(ctx).shed, "15 jobs at 2,000/s is 7.5ms")
	assert.InDelta(t, 2000, s.stats().DrainRate, 1)

	// A busy window that drains slower is believed (the model got slower);
	// one that began idle is not.
	clk.Advance(time.Second)
	f.set(15, 2510)
	s.admit(ctx)
	assert.InDelta(t, 2000, s.stats().DrainRate, 1, "the window began with no backlog")
	clk.Advance(time.Second)
	f.set(15, 3010)
	assert.True(t, s.admit(ctx).shed, "15 jobs at 500/s is 30ms")
	assert.InDelta(t, 500, s.stats().DrainRate, 1)
}

func TestShedder_MaxLen(t *testing.T) {
	ctx := context.Background()
	s, f, clk := newTestShedder(0, [3]int64{100, 0, 50})
	f.set(99, 0)
	assert.False(t, s.admit(ctx).shed, "99 of 100")
	d := s.admit(ctx)
	require.True(t, d.shed, "the admitted one makes 100")
	assert.Equal(t, chatapi.CodeQueueFull, d.code)
	assert.Contains(t, d.reason, "queue chat holds about 100 jobs, its limit is 100")

	clk.Advance(shedRefresh)
	f.mu.Lock()
	f.r.backlog = [3]int64{0, 1000, 50}
	f.mu.Unlock()
	d = s.admit(ctx)
	require.True(t, d.shed, "webhooks full: a chat's follow-up could not be queued")
	assert.Contains(t, d.reason, "queue webhooks")
	st := s.stats()
	assert.EqualValues(t, 2, st.Full)
	assert.Zero(t, st.Overloaded)

	// A failed reading keeps the last one.
	clk.Advance(shedRefresh)
	f.mu.Lock()
	f.err = errors.New("redis down")
	f.mu.Unlock()
	assert.True(t, s.admit(ctx).shed)
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "1", time.Millisecond: "1", time.Second: "1",
		1001 * time.Millisecond: "2", 2500 * time.Millisecond: "3"} {
		assert.Equal(t, want, retryAfterSeconds(d), "%s", d)
	}
}

// A queue that refuses the enqueue (queue.Config.MaxLen, through the
// service's enqueue seam) is a 503 with its Retry-After, the chat's pending
// marker is dropped, and /healthz says degraded with the reason.
func TestShed_QueueFullFromEnqueue(t *testing.T) {
	h := startService(t, "redis://"+redistest.Mini(t).Addr(), nil)
	full := &queue.FullError{Queue: chatapi.QueueChat, Len: 10_000, Limit: 10_000, RetryAfter: 2500 * time.Millisecond}
	h.s.enqueueChat = func(context.Context, string, []byte) (string, error) {
		return "", errors.Join(errors.New("queue: enqueue"), full) // wrapped, as a caller might get it
	}
	body := `{"user":"ada","agent":"assistant","message":"hi"}`
	code, hdr, resp := h.do(http.MethodPost, chatapi.PathChat, body)
	require.Equal(t, http.StatusServiceUnavailable, code, "%s", resp)
	assert.Equal(t, "3", hdr.Get("Retry-After"), "2.5s rounded up")
	assertJSONError(t, resp, chatapi.CodeQueueFull)
	assert.NotContains(t, string(resp), "10000", "figures go to /healthz, not to the client")

	var hl chatapi.Health
	h.getJSON(chatapi.PathHealth, http.StatusOK, &hl)
	assert.Equal(t, "degraded", hl.Status)
	assert.Contains(t, hl.Shedding, `queue chat is full: 10000 jobs, the limit is 10000`)
	assert.Empty(t, hl.Reasons)

	d := h.debug()
	assert.EqualValues(t, 1, d.Shed.Full)
	assert.EqualValues(t, 1, d.HTTP.Unavailable)
	assert.Zero(t, d.HTTP.Accepted)
	assert.Zero(t, d.HTTP.Errors)
}

// Past the wait budget, a chat is answered 503 before the limiter or Redis
// sees it.
func TestShed_WaitBudget(t *testing.T) {
	h := startService(t, "redis://"+redistest.Mini(t).Addr(), func(c *Config) { c.WaitBudget = 10 * time.Millisecond })
	f := &fakeBacklog{}
	clk := testutil.NewClock()
	h.s.shed.read, h.s.shed.now = f.read, clk.Now
	f.set(100, 0)
	h.post("ada", "assistant", "no rate known yet")
	clk.Advance(time.Second)
	f.set(100, 1000)
	body := `{"user":"ada","agent":"assistant","message":"hi"}`
	code, hdr, resp := h.do(http.MethodPost, chatapi.PathChat, body)
	require.Equal(t, http.StatusServiceUnavailable, code, "%s", resp)
	assert.Equal(t, "1", hdr.Get("Retry-After"), "90ms over the budget, at least a second")
	assertJSONError(t, resp, chatapi.CodeOverloaded)
	assert.Empty(t, hdr.Get("RateLimit-Limit"), "refused before the limiter")

	var hl chatapi.Health
	h.getJSON(chatapi.PathHealth, http.StatusOK, &hl)
	assert.Equal(t, "degraded", hl.Status)
	assert.Contains(t, hl.Shedding, "would wait about 100ms")
	d := h.debug()
	assert.EqualValues(t, 1, d.Shed.Overloaded)
	assert.EqualValues(t, 10*time.Millisecond, d.Shed.WaitBudget)
	assert.Equal(t, [3]int64{10_000, 10_000, 10_000}, d.Shed.MaxLen)
	assert.EqualValues(t, 1000, d.Shed.DrainRate)
	assert.Equal(t, uint64(1), d.Limiter.Allowed, "the shed chat never reached the limiter")
}

// Without shedding every chat is queued, and the chat workers report how
// long a chat waited for a handler.
func TestNoShedding_ChatWait(t *testing.T) {
	h := startService(t, "redis://"+redistest.Mini(t).Addr(), func(c *Config) { c.NoShedding = true })
	require.Nil(t, h.s.shed)
	h.s.enqueueChat = func(context.Context, string, []byte) (string, error) {
		return "", &queue.FullError{Queue: "chat", Len: 1, Limit: 1}
	}
	code, hdr, resp := h.do(http.MethodPost, chatapi.PathChat, `{"user":"ada","agent":"assistant","message":"hi"}`)
	require.Equal(t, http.StatusServiceUnavailable, code, "%s", resp)
	assert.Equal(t, "1", hdr.Get("Retry-After"), "no estimate: a second")
	h.s.enqueueChat = func(ctx context.Context, _ string, p []byte) (string, error) {
		return h.s.queues[chatapi.QueueChat].Enqueue(ctx, p)
	}
	h.reply(h.post("ada", "assistant", "hi"))
	d := h.debug()
	assert.False(t, d.Shed.Enabled)
	assert.EqualValues(t, 1, d.ChatWait.Count())
	assert.Positive(t, d.ChatWait.Quantile(0.99))
	var hl chatapi.Health
	h.getJSON(chatapi.PathHealth, http.StatusOK, &hl)
	assert.Equal(t, "ok", hl.Status)
}

// A reading that cannot be renewed is not drained on paper beyond
// readTimeout, and is ignored once stale (Redis errors answer then).
func TestShedder_StaleReading(t *testing.T) {
	ctx := context.Background()
	s, f, clk := newTestShedder(10*time.Millisecond, [3]int64{})
	s.admit(ctx)
	s.done()
	clk.Advance(time.Second)
	f.set(500, 1000)
	require.True(t, s.admit(ctx).shed)
	f.mu.Lock()
	f.err = errors.New("timeout")
	f.mu.Unlock()
	clk.Advance(2 * time.Second)
	assert.True(t, s.admit(ctx).shed, "500 jobs less at most 40ms of drain at 1,000/s: still 460ms")
	f.mu.Lock()
	f.r.backlog[0], f.r.processed = 55, 3000 // about 1,000/s since
	f.err = nil
	f.mu.Unlock()
	clk.Advance(shedRefresh)
	require.True(t, s.admit(ctx).shed, "55ms")
	f.mu.Lock()
	f.err = errors.New("timeout")
	f.mu.Unlock()
	clk.Advance(time.Second)
	assert.True(t, s.admit(ctx).shed, "a second without a reading: 55 jobs less 40 drained on paper is still 15ms")
	clk.Advance(staleAfter)
	assert.False(t, s.admit(ctx).shed, "a reading over 5s old is ignored")
}

// jsonErrors rewrites plain-text error answers (the router's, the
// limiter's) and leaves everything else alone.
func TestJSONErrors(t *testing.T) {
	for _, c := range []struct {
		name       string
		h          http.HandlerFunc
		code       int
		body, want string // want: the error code, "" for untouched
		retryAfter string
	}{
		{"limiter down", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
		}, 503, "", chatapi.CodeUnavailable, "1"},
		{"limited", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7")
			http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
		}, 429, "", chatapi.CodeRateLimited, "7"},
		{"already JSON", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusNotFound, chatapi.Error{Error: "no chat", Code: chatapi.CodeNotFound})
		}, 404, `{"error":"no chat","code":"not_found"}` + "\n", "", ""},
		{"success", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("fine")) }, 200, "fine", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			jsonErrors(c.h).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			assert.Equal(t, c.code, rec.Code)
			assert.Equal(t, c.retryAfter, rec.Header().Get("Retry-After"))
			if c.want == "" {
				assert.Equal(t, c.body, rec.Body.String())
				return
			}
			assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			assertJSONError(t, rec.Body.Bytes(), c.want)
		})
	}
}

// Under a light load the workers drain what comes: that rate is not their
// capacity, and a job or two in Redis is no reason to shed.
func TestShedder_LightLoadDoesNotShed(t *testing.T) {
	ctx := context.Background()
	s, f, clk := newTestShedder(4*time.Millisecond, [3]int64{})
	f.setBusy(1)
	var processed uint64
	for i := range 200 { // 4s of readings at 200 chats/s, a job waiting in one of ten
		processed += 4
		f.set(int64(i%10/9), processed)
		assert.False(t, s.admit(ctx).shed, "reading %d", i)
		s.done()
		clk.Advance(shedRefresh)
	}
	assert.InDelta(t, 200, s.stats().DrainRate, 1, "a lower bound")
	f.set(3, processed)
	assert.False(t, s.admit(ctx).shed, "3 jobs at a lower bound of 200/s would be 15ms; not a capacity")

	// Saturated for a second: now it is a capacity.
	for range 50 {
		processed += 12
		f.set(3, processed)
		s.admit(ctx)
		s.done()
		clk.Advance(shedRefresh)
	}
	f.set(5, processed)
	assert.True(t, s.admit(ctx).shed, "5 jobs at 600/s is 8ms")
}
