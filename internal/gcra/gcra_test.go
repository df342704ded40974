package gcra

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestUnits: exact units where they fit, whole µs rounded up where they
// do not, and no units at all past MaxUnits.
func TestUnits(t *testing.T) {
	for _, c := range []struct {
		rate, period, burst int64
		scale, step         int64
		exact, ok           bool
	}{
		{7, 90_000_000, 1, 7, 90_000_000, true, true},               // 7 per 90s: 12,857,142 6/7 µs, exact
		{10, 1_000_000, 5, 1, 100_000, true, true},                  // 10/s
		{3, 1_000_000, MaxUnits, 1, 333_334, false, false},          // no room at all
		{3, 1_000_000, MaxUnits / 400_000, 1, 333_334, false, true}, // rounded up to whole µs
	} {
		scale, step, exact, ok := Units(c.rate, c.period, c.burst)
		require.Equal(t, []any{c.scale, c.step, c.exact, c.ok}, []any{scale, step, exact, ok}, "%+v", c)
	}
}
