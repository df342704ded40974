package browsertest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// repoRoot is the bounded checkout this module sits in (admin/browsertest).
const repoRoot = "../.."

// buildChatservice builds examples/chatservice into dir and returns the
// binary's path. It is the one place that knows where the example lives:
// in its own module (examples/go.mod, package ./chatservice) or in the
// library's (./examples/chatservice).
func buildChatservice(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "chatservice")
	cmd := exec.Command("go", "build", "-o", bin, "./examples/chatservice")
	cmd.Dir = repoRoot
	if _, err := os.Stat(filepath.Join(repoRoot, "examples", "go.mod")); err == nil {
		cmd = exec.Command("go", "build", "-o", bin, "./chatservice")
		cmd.Dir = filepath.Join(repoRoot, "examples")
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s in %s: %s", cmd, cmd.Dir, out)
	return bin
}

// service is a running chatservice.
type service struct {
	URL string // http://127.0.0.1:port, no trailing slash
	log string // its log file
}

var listening = regexp.MustCompile(`msg=listening url=(http://127\.0\.0\.1:[0-9]+)`)

// startService starts bin on a loopback port the kernel picks (-addr
// 127.0.0.1:0, read back from its "listening" log line) against redisURL,
// with args added, logging into dir/service.log. t.Cleanup stops it with
// SIGTERM and checks that it shut down cleanly.
func startService(t testing.TB, bin, dir, redisURL string, args ...string) service {
	t.Helper()
	logPath := filepath.Join(dir, "service.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append([]string{"-addr", "127.0.0.1:0", "-redis", redisURL}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Cancelling ctx asks for a clean shutdown; one that takes longer than
	// WaitDelay is killed (and fails the test below).
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		err := cmd.Wait()
		_ = logFile.Close()
		b, _ := os.ReadFile(logPath)
		// A SIGTERM'd service that shut down cleanly exits 0 (Wait then
		// answers ctx's error: the exit followed the Cancel).
		if err != nil && !errors.Is(err, context.Canceled) || cmd.ProcessState.ExitCode() != 0 || !bytes.Contains(b, []byte("tasks_remaining=0")) {
			t.Errorf("chatservice did not shut down cleanly (%v, exit status %d); its log is %s", err, cmd.ProcessState.ExitCode(), logPath)
		}
	})
	var s service
	testutil.Eventually(t, 60*time.Second, "chatservice's listening line in "+logPath, func() bool {
		b, _ := os.ReadFile(logPath)
		if m := listening.FindSubmatch(b); m != nil {
			s.URL = string(m[1])
			return true
		}
		require.NotContains(t, string(b), "level=ERROR", "chatservice failed at start; its log:\n%s", b)
		return false
	})
	s.log = logPath
	res, err := http.Get(s.URL + "/healthz")
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, "GET /healthz")
	return s
}
