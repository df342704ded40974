// Package testutil holds the helpers the bounded packages' tests share:
// waiting for a condition with a deadline, receiving with a timeout, and a
// manual clock. Only _test.go files import it.
package testutil

import (
	"sync"
	"testing"
	"time"
)

// Wait is the deadline Eventually and Recv use unless told otherwise: long
// enough for a loaded 2-core CI machine, short enough that a hang fails the
// test instead of the run.
const Wait = 10 * time.Second

// Eventually checks cond every millisecond until it holds, failing the test
// with what if it does not within the given time. It must run on the test
// goroutine.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Recv receives from ch, failing the test if nothing comes within Wait. It
// must run on the test goroutine.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(Wait)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %s waiting for %s", Wait, what)
		panic("unreachable")
	}
}

// T0 is the instant a Clock starts at unless told otherwise.
var T0 = time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)

// Clock is a manual clock for the Now fields of configs: it moves only when
// told. Safe for concurrent use; the zero value reads the zero time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock reading T0.
func NewClock() *Clock { return &Clock{t: T0} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t, backwards too.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// Advance moves the clock by d (backwards if d < 0).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
