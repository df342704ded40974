package memwatch

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// recvAlert receives from a subscription's channel, failing the test if
// nothing comes (not even the close) within testutil.Wait. Unlike
// testutil.Recv it reports whether the channel is still open.
func recvAlert(t *testing.T, c <-chan Alert) (Alert, bool) {
	t.Helper()
	timer := time.NewTimer(testutil.Wait)
	defer timer.Stop()
	select {
	case a, open := <-c:
		return a, open
	case <-timer.C:
		t.Fatalf("no alert and no close within %s", testutil.Wait)
		return Alert{}, false
	}
}

// flip raises and clears the goroutine alert n times each.
func flip(f *fake, w *Watcher, n int) {
	for range n {
		for _, g := range []uint64{100, 10} {
			f.clk.Advance(time.Second)
			f.s.Goroutines = g
			w.Tick()
		}
	}
}

func TestSlowSubscriberLosesAlertsAndNeverBlocks(t *testing.T) {
	f := newFake()
	w := newWatcher(t, f.config(Config{Goroutines: 100}))
	slow, err := w.Subscribe(1) // never read
	require.NoError(t, err)
	fast, err := w.Subscribe(64)
	require.NoError(t, err)

	flip(f, w, 10) // returns: the full buffer does not block sampling

	require.Equal(t, uint64(19), slow.Dropped())
	require.Zero(t, fast.Dropped())
	require.Len(t, fast.C(), 20)
	first, open := recvAlert(t, slow.C())
	require.True(t, open)
	require.True(t, first.Raised, "the buffer kept the first alert")
	require.Equal(t, uint64(19), w.Stats().AlertsDropped)

	slow.Close()
	slow.Close() // idempotent
	_, open = recvAlert(t, slow.C())
	require.False(t, open, "Close closes the channel")
	flip(f, w, 1)
	require.Equal(t, uint64(19), slow.Dropped(), "a closed subscription gets nothing")
	require.Len(t, fast.C(), 22)
	fast.Close()
	for range 22 { // what was buffered can still be read
		_, open := recvAlert(t, fast.C())
		require.True(t, open)
	}
	_, open = recvAlert(t, fast.C())
	require.False(t, open)
	require.Empty(t, w.subs.list)
}

func TestSubscribeBounds(t *testing.T) {
	w := newWatcher(t, Config{MaxSubscribers: 2})
	_, err := w.Subscribe(0)
	require.ErrorContains(t, err, "buffer must be in [1, 1024], got 0")
	_, err = w.Subscribe(MaxSubscriptionBuffer + 1)
	require.ErrorContains(t, err, "buffer must be in")

	a, err := w.Subscribe(1)
	require.NoError(t, err)
	b, err := w.Subscribe(1)
	require.NoError(t, err)
	_, err = w.Subscribe(1)
	require.ErrorIs(t, err, ErrTooManySubscribers)
	a.Close()
	c, err := w.Subscribe(1)
	require.NoError(t, err, "closing one makes room")
	b.Close()
	c.Close()
}

func TestOnAlertRunsOutsideTheWatchersLocks(t *testing.T) {
	f := newFake()
	var seen []string
	var w *Watcher
	w = newWatcher(t, f.config(Config{Goroutines: 100, OnAlert: func(a Alert) {
		// Every method but Tick may be called from the callback.
		seen = append(seen, string(a.Kind))
		require.Equal(t, a.Time, w.Latest().Time)
		require.NotEmpty(t, w.History())
		require.Equal(t, a.Raised, len(w.Active()) == 1)
		_ = w.Stats()
		_, _ = w.Trend()
		_ = w.Profiles()
		s, err := w.Subscribe(1)
		require.NoError(t, err)
		s.Close()
	}}))
	flip(f, w, 2) // a lock held around OnAlert would deadlock here
	require.Len(t, seen, 4)
}
