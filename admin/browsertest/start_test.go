package browsertest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A "chromium" that starts and never answers (a browser stuck at start,
// or the wrong binary) fails the test after startWithin with an error that
// says so, its process killed, instead of hanging the test until go test's
// -timeout.
func TestBrowserThatNeverAnswers(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "chromium")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 3600\n"), 0o755))
	ctx, closeAll, err := startBrowser(bin, t.TempDir(), 2*time.Second, time.Minute, t.Logf)
	if err == nil {
		closeAll()
		_ = ctx
	}
	require.ErrorContains(t, err, bin+" did not answer within 2s")
}
