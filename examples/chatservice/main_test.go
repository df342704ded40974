package main

import (
	"bufio"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// run with no Redis configured starts the embedded one, serves, and on
// SIGTERM shuts everything down and logs that no task remains.
func TestRun_EmbeddedRedisAndSignal(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		c := run([]string{"-addr", "127.0.0.1:0", "-agents-latency", "1ms"}, pw)
		pw.Close()
		code <- c
	}()

	var log strings.Builder
	lines := bufio.NewScanner(pr)
	listening := regexp.MustCompile(`msg=listening url=(http://\S+)`)
	var url string
	for url == "" && lines.Scan() {
		log.WriteString(lines.Text() + "\n")
		if m := listening.FindStringSubmatch(lines.Text()); m != nil {
			url = m[1]
		}
	}
	require.NotEmpty(t, url, "no listening line in:\n%s", log.String())
	assert.Contains(t, log.String(), "using an embedded Redis (miniredis)")

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post(url+"/api/chat", "application/json", strings.NewReader(`{"user":"ada","agent":"coder","message":"hi"}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	// The dashboard is mounted, read-only without -admin-mutations.
	resp, err = client.Get(url + "/admin/api/session")
	require.NoError(t, err)
	session, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(session), `"mutations":false`)
	client.CloseIdleConnections()

	// The signal reaches run's signal.NotifyContext, registered before it
	// logged that it listens.
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	for lines.Scan() {
		log.WriteString(lines.Text() + "\n")
	}
	select {
	case c := <-code:
		assert.Equal(t, 0, c, log.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("run did not return after SIGTERM:\n%s", log.String())
	}
	out := log.String()
	assert.Regexp(t, `msg="lifecycle: stopping" component=lifecycle reason="terminated signal received" timeout=10s`, out)
	assert.Regexp(t, `msg=stopped tasks=".*embedded redis \(miniredis\) \(onclose\).*http server \(go\)"`, out)
	assert.Regexp(t, `msg="shutdown complete" stopped=\d+ tasks_remaining=0`, out)
}

func TestRun_BadFlags(t *testing.T) {
	for _, args := range [][]string{{"-nope"}, {"-log-level", "loud"}, {"-concurrency", "x"}, {"-admin-mutations=maybe"}} {
		assert.Equal(t, 2, run(args, io.Discard), "%q", args)
	}
	// Wiring that fails after the group exists closes it and exits 1.
	t.Setenv("REDIS_URL", "")
	for args, want := range map[string]string{
		"-addr 127.0.0.1:-1": `level=ERROR msg=listening`,
		"-fail-rate 2":       `level=ERROR msg="starting the service" err="chatservice: Config.FailRate must be in [0, 1], got 2"`,
	} {
		var out strings.Builder
		assert.Equal(t, 1, run(strings.Fields(args), &out), args)
		assert.Contains(t, out.String(), want, args)
		assert.Contains(t, out.String(), "tasks_remaining=0", "%s: the embedded Redis and what was built are closed", args)
	}
}
