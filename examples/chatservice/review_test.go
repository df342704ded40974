package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

// A handler that panics after admission (net/http recovers it) must count
// the chat out of the gate: else every panic leaks a place for good.
func TestShedChat_PanicCountsOut(t *testing.T) {
	sh, _, _ := newTestShedder(time.Hour, [3]int64{})
	sh.target = time.Millisecond
	sh.gate = &gate{slots: 5, busy: func() int64 { return 0 }}
	s := &service{shed: sh, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h := s.shedChat(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("handler bug") }))
	for range 20 {
		func() {
			defer func() { _ = recover() }()
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/api/chat", nil))
		}()
	}
	assert.Zero(t, sh.gate.pending.Load(), "chats whose handler panicked are not waiting")
	assert.Equal(t, sh.admitted.Load(), sh.finished.Load())
}

// Chats admitted here and started on another instance are never counted
// out; once the load is gone (nothing in Redis, nothing fetched, no request
// in flight) a reading must let the service accept again, even before a
// capacity was measured (no slack).
func TestShedder_GateRecoversAfterChatsStartedElsewhere(t *testing.T) {
	ctx := context.Background()
	sh, f, clk := newTestShedder(time.Hour, [3]int64{})
	f.mu.Lock()
	f.r.busy = 0 // idle workers here
	f.mu.Unlock()
	sh.target = time.Millisecond
	sh.gate = &gate{slots: 5, busy: func() int64 { return 0 }}
	for i := range 5 {
		require.False(t, sh.admit(ctx).shed, "chat %d", i)
		sh.done() // queued; another instance starts it
	}
	for i := range 3 {
		clk.Advance(time.Second) // the load is over; readings say idle
		assert.False(t, sh.admit(ctx).shed, "after %d idle seconds the gate still counts chats started elsewhere", i+1)
		sh.done()
		sh.notQueued()
	}
}

// Workers measured saturated and draining nothing (a hung provider) must
// make the budget shed, not switch it off.
func TestShedder_BudgetShedsWhenDrainStops(t *testing.T) {
	ctx := context.Background()
	sh, f, clk := newTestShedder(10*time.Millisecond, [3]int64{})
	f.set(100, 0)
	require.False(t, sh.admit(ctx).shed) // first reading, no rate yet
	sh.done()
	for range 3 {
		clk.Advance(time.Second)
		f.set(100, 0) // saturated, nothing processed
		sh.admit(ctx)
		sh.done()
	}
	d := sh.admit(ctx)
	assert.True(t, d.shed, "100 chats waiting, none drained in 3s")
	assert.NotEqual(t, "1", retryAfterSeconds(d.retryAfter))
}

// A very low rate and a big backlog must not overflow the wait into a
// negative duration that passes the budget.
func TestEstimate_WaitDoesNotOverflow(t *testing.T) {
	e := &estimate{rate: 0.001}
	assert.Positive(t, e.wait(1e7))
	assert.Greater(t, e.wait(1e7), time.Hour)
}

func TestRetryAfterSeconds_Huge(t *testing.T) {
	for _, d := range []time.Duration{math.MaxInt64, math.MaxInt64 - time.Second/2, -time.Hour, math.MinInt64} {
		v := retryAfterSeconds(d)
		assert.Regexp(t, `^[0-9]+$`, v, "%d", d)
		if d > 0 {
			assert.NotEqual(t, "1", v, "%d: a wait of centuries is not one second", d)
		}
	}
}

// Many concurrent chats, a third failing to enqueue and a third panicking
// in the handler, with the handlers saturated: once the load is over and
// the queue drained, the gate counts nothing and a chat is accepted again.
// On the old code the service shed every chat for good.
func TestShed_AcceptsAgainAfterFailuresAndPanics(t *testing.T) {
	h := startService(t, "redis://"+redistest.Mini(t).Addr(), func(c *Config) {
		c.Concurrency, c.Latency, c.FailRate, c.WaitTarget = 2, 5*time.Millisecond, 0.2, time.Millisecond
	})
	real := h.s.enqueueChat
	var n atomic.Int64
	var over atomic.Bool // the load is over: no more failures
	h.s.enqueueChat = func(ctx context.Context, user string, p []byte) (string, error) {
		if over.Load() {
			return real(ctx, user, p)
		}
		switch n.Add(1) % 3 {
		case 0:
			return "", errors.New("redis said no")
		case 1:
			panic(http.ErrAbortHandler)
		}
		return real(ctx, user, p)
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				body := fmt.Sprintf(`{"user":"u%d-%d","agent":"assistant","message":"hi"}`, g, i)
				_, _, _, _ = h.try(http.MethodPost, chatapi.PathChat, body) // panics end the connection
			}
		}()
	}
	wg.Wait()
	over.Store(true)
	testutil.Eventually(t, testutil.Wait, "the gate to empty and a chat to be accepted", func() bool {
		code, _, _, err := h.try(http.MethodPost, chatapi.PathChat, `{"user":"after","agent":"assistant","message":"hi"}`)
		return err == nil && code == http.StatusAccepted && h.s.shed.gate.pending.Load() <= 1
	})
}

// An informational answer (103 Early Hints) is not the final one: the
// status written after it must reach the client, rewritten when an error.
func TestJSONErrors_Informational(t *testing.T) {
	h := jsonErrors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		http.Error(w, "no such thing", http.StatusNotFound)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.JSONEq(t, `{"error":"no such thing","code":"not_found"}`, string(b))
}
