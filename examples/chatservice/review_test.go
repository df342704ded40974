package main

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
