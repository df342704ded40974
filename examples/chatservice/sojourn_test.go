package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

// TestSojourn drives the controller with injected time: a start every
// millisecond with the wait each phase gives, checking after each start
// whether it sheds.
func TestSojourn(t *testing.T) {
	const target = time.Millisecond
	type phase struct {
		starts int
		wait   time.Duration
		// shedAfter is the first start of the phase (1-based) after which
		// it sheds, 0: never in the phase; stopAfter the first after which
		// it no longer sheds (for a phase that begins shedding).
		shedAfter, stopAfter int
		// free: a chat handler was free when the chat started, so its wait
		// was the path through Redis, not a queue.
		free bool
	}
	for _, tc := range []struct {
		name   string
		phases []phase
	}{
		{"steady under the target never sheds", []phase{{starts: 1000, wait: target / 2}}},
		{"at the target never sheds", []phase{{starts: 1000, wait: target}}},
		{"waits over the target with a handler free never shed", []phase{{starts: 1000, wait: 5 * target, free: true}}},
		{"a free handler ends a run of waits over the target", []phase{
			{starts: 90, wait: 5 * target}, {starts: 1, wait: 5 * target, free: true},
			{starts: 90, wait: 5 * target},
		}},
		{"bursts over the target shorter than an interval never shed", []phase{
			{starts: 90, wait: 5 * target}, {starts: 1, wait: target / 2},
			{starts: 90, wait: 5 * target}, {starts: 1, wait: target / 2},
		}},
		{"step overload sheds within one interval", []phase{
			{starts: 200, wait: target / 2},
			{starts: 200, wait: 3 * target, shedAfter: 101}, // the 101st start is 100ms after the first over
		}},
		{"recovery stops shedding at the first start within the target", []phase{
			{starts: 200, wait: 3 * target, shedAfter: 101},
			{starts: 50, wait: target / 2, stopAfter: 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := testutil.NewClock()
			c := &sojourn{target: target}
			shedding := false
			for pi, p := range tc.phases {
				for i := 1; i <= p.starts; i++ {
					clk.Advance(time.Millisecond)
					c.observe(p.wait, !p.free, clk.Now())
					got := c.shedding(clk.Now())
					want := shedding
					switch {
					case p.shedAfter > 0 && i >= p.shedAfter:
						want = true
					case p.stopAfter > 0 && i >= p.stopAfter:
						want = false
					case p.shedAfter > 0 && i < p.shedAfter:
						want = false
					}
					require.Equal(t, want, got, "phase %d start %d", pi, i)
					shedding = got
				}
			}
		})
	}
}

// Once no chat starts (the shed emptied the queue), the controller stops
// shedding an interval after the last start over the target.
func TestSojourn_StopsWhenNothingStarts(t *testing.T) {
	clk := testutil.NewClock()
	c := &sojourn{target: time.Millisecond}
	for range 150 {
		clk.Advance(time.Millisecond)
		c.observe(5*time.Millisecond, true, clk.Now())
	}
	require.True(t, c.shedding(clk.Now()))
	clk.Advance(sojournInterval - time.Millisecond)
	assert.True(t, c.shedding(clk.Now()))
	clk.Advance(time.Millisecond)
	assert.False(t, c.shedding(clk.Now()))
}

func TestGate(t *testing.T) {
	busy := int64(0)
	g := &gate{slots: 5, busy: func() int64 { return busy }}
	// Five handlers free: five chats in, not a sixth.
	for i := range 5 {
		require.True(t, g.admit(0, -1), "admission %d", i)
	}
	assert.False(t, g.admit(0, -1), "five admitted for five free handlers")
	busy = 5
	for range 5 {
		g.leave() // started
	}
	assert.False(t, g.admit(0, -1), "every handler busy, no slack")
	assert.True(t, g.admit(2, -1), "slack 2: two may wait")
	assert.True(t, g.admit(2, -1))
	assert.False(t, g.admit(2, -1))
	// A handler frees; the count says two wait for it, a reading of Redis
	// says none can: they started elsewhere.
	busy = 4
	assert.False(t, g.admit(0, -1), "two counted for one free handler")
	assert.True(t, g.admit(0, 0), "capped by the reading")
	assert.EqualValues(t, 1, g.pending.Load())
	g.leave()
	g.leave()
	assert.EqualValues(t, 0, g.pending.Load(), "never below zero")
}

// Through the shedder: the gate sheds with CodeOverloaded, a chat not
// queued counts out, and the sojourn controller sheds on measured waits.
func TestShedder_GateAndSojourn(t *testing.T) {
	ctx := context.Background()
	s, _, clk := newTestShedder(time.Hour, [3]int64{})
	busy := int64(5)
	s.target = time.Millisecond
	s.gate = &gate{slots: 5, busy: func() int64 { return busy }}
	s.soj = &sojourn{target: time.Millisecond}
	busy = 4
	require.False(t, s.admit(ctx).shed, "one handler free")
	d := s.admit(ctx)
	require.True(t, d.shed, "the free handler is spoken for")
	assert.Contains(t, d.reason, "every chat handler is busy")
	s.notQueued() // the first one's request failed
	s.done()
	require.False(t, s.admit(ctx).shed)
	s.done()
	s.started(time.Millisecond/2, true)
	for range 101 {
		clk.Advance(time.Millisecond)
		s.started(2*time.Millisecond, true)
	}
	busy = 0
	d = s.admit(ctx)
	require.True(t, d.shed, "every start waited over the target for 100ms")
	assert.Contains(t, d.reason, "waited over the target of 1ms")
	s.started(0, true)
	assert.False(t, s.admit(ctx).shed, "a start within the target")
}

// Through HTTP: with its one handler spoken for, the service answers the
// next chat 503 with Retry-After and reports degraded health.
func TestShed_Gate(t *testing.T) {
	h := startService(t, "redis://"+redistest.Mini(t).Addr(), func(c *Config) {
		c.Concurrency, c.Latency, c.FailRate = 1, 200*time.Millisecond, 0
	})
	h.post("ada", "assistant", "takes the handler")
	body := `{"user":"ada","agent":"assistant","message":"hi"}`
	code, hdr, resp := h.do(http.MethodPost, chatapi.PathChat, body)
	require.Equal(t, http.StatusServiceUnavailable, code, "%s", resp)
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	assertJSONError(t, resp, chatapi.CodeOverloaded)
	var hl chatapi.Health
	h.getJSON(chatapi.PathHealth, http.StatusOK, &hl)
	assert.Equal(t, "degraded", hl.Status)
	assert.Contains(t, hl.Shedding, "every chat handler is busy")
}
