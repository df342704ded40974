package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// RequireBrowserEnv names the environment variable that turns a missing
// chromium into a test failure instead of a skip. CI sets it to 1.
const RequireBrowserEnv = "BOUNDED_REQUIRE_BROWSER"

// ArtifactsEnv names a folder for the screenshots and logs; without it
// each test makes one under the system's temporary folder and logs its path
// (t.TempDir would delete them).
const ArtifactsEnv = "BOUNDED_ARTIFACTS"

// chromiumPath returns Debian's chromium (or $BOUNDED_CHROMIUM), or skips
// the test (fails it when BOUNDED_REQUIRE_BROWSER=1).
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BOUNDED_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(RequireBrowserEnv) == "1" {
		t.Fatalf("browsertest: chromium not found on PATH and %s=1: install it (Debian: apt-get install chromium) or set BOUNDED_CHROMIUM", RequireBrowserEnv)
	}
	t.Skipf("browsertest: chromium not found on PATH; skipping the real-browser test (Debian: apt-get install chromium; set %s=1 to fail instead)", RequireBrowserEnv)
	return ""
}

// artifactsDir returns the folder where this test keeps its screenshots and
// logs, and logs its path.
func artifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(ArtifactsEnv)
	if dir != "" {
		dir = filepath.Join(dir, filepath.Base(t.Name()))
		require.NoError(t, os.MkdirAll(dir, 0o755))
	} else {
		var err error
		dir, err = os.MkdirTemp("", "bounded-admin-browser-")
		require.NoError(t, err)
	}
	t.Logf("screenshots and logs of %s: %s", t.Name(), dir)
	return dir
}

// startWithin bounds chromium's start: a browser that never answers
// fails the test instead of hanging it until go test's -timeout.
const startWithin = time.Minute

// browser starts a headless chromium for the test and returns a tab's
// context, bounded by within; everything is closed in t.Cleanup.
func browser(t testing.TB, within time.Duration) context.Context {
	t.Helper()
	bin := chromiumPath(t)
	ctx, closeAll, err := startBrowser(bin, t.TempDir(), startWithin, within, t.Logf)
	require.NoError(t, err)
	t.Cleanup(closeAll)
	return ctx
}

// startBrowser starts bin headless with its profile in userDir and returns
// a tab's context bounded by within, and the func that closes the tab and
// the browser (its process killed by its handle and waited for).
func startBrowser(bin, userDir string, startWithin, within time.Duration, logf func(string, ...any)) (context.Context, func(), error) {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", "new"),
		// The test runs as root in CI, where chromium refuses to start with
		// its sandbox.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(userDir),
		chromedp.WindowSize(1280, 860),
		// The machine has no network but loopback: without these flags
		// chromium keeps trying Google's hosts.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(logf))
	closeAll := func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
	}
	// Start the browser now, on the tab's own context (a timeout on the
	// first call's context would bound the browser's life), so a browser
	// that cannot start fails here with its own error. One that does not
	// answer within startWithin is killed (the allocator's cancel), which
	// ends the wait.
	deadline, cancelDeadline := context.WithTimeout(context.Background(), startWithin)
	stop := context.AfterFunc(deadline, cancelAlloc)
	err := chromedp.Do(tctx)
	killed := !stop()
	cancelDeadline()
	if killed {
		closeAll()
		return nil, nil, fmt.Errorf("%s did not answer within %v (killed): %v", bin, startWithin, err)
	}
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	ctx, cancelTimeout := context.WithTimeout(tctx, within)
	return ctx, func() { cancelTimeout(); closeAll() }, nil
}

// screenshot saves the tab's viewport as dir/name.png.
func screenshot(t testing.TB, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	path := filepath.Join(dir, name+".png")
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}
