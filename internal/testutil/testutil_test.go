package testutil

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEventuallyAndRecv(t *testing.T) {
	var n atomic.Int32
	Eventually(t, Wait, "three checks", func() bool { return n.Add(1) >= 3 })
	require.EqualValues(t, 3, n.Load())

	ch := make(chan int, 1)
	ch <- 5
	require.Equal(t, 5, Recv(t, ch, "five"))
}

// fatalTB records Fatalf instead of ending the goroutine it runs on.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) { f.msg = format; panic(f) }
func (f *fatalTB) Helper()                           {}

func TestEventuallyFails(t *testing.T) {
	f := &fatalTB{TB: t}
	func() {
		defer func() { require.Equal(t, f, recover()) }()
		Eventually(f, 5*time.Millisecond, "never", func() bool { return false })
	}()
	require.Contains(t, f.msg, "timed out")
}

func TestClock(t *testing.T) {
	c := NewClock()
	require.Equal(t, T0, c.Now())
	c.Advance(time.Second)
	require.Equal(t, T0.Add(time.Second), c.Now())
	c.Set(T0.Add(-time.Hour))
	require.Equal(t, T0.Add(-time.Hour), c.Now())
}
