package memwatch

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// TestAlertLogsHaveNoDuplicateKeys: an alert's record once logged its
// message under "msg", the key of the record's own message (msg=... msg=...).
func TestAlertLogsHaveNoDuplicateKeys(t *testing.T) {
	logs := testutil.NewLogs()
	w, err := New(Config{Goroutines: 2, GoroutinesClear: 1, Logger: logs.Logger()}) // raised at the first sample
	require.NoError(t, err)
	w.Tick()
	rs := logs.Records()
	require.NotEmpty(t, rs, "no alert logged")
	for _, r := range rs {
		require.Empty(t, r.Duplicates(), "record with a duplicated key: %s", r)
	}
	require.Contains(t, rs[0].Keys(), "detail")
	require.Contains(t, rs[0].Keys(), "kind")
}
