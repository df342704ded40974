package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/queue"
)

// A command's -h prints its flags with their defaults; the --redis flag's
// default is the URL given before the command or in $BOUNDED_REDIS_URL, and
// it must not print the password.
func TestHelpHidesPassword(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	url := "redis://user:" + secret + "@127.0.0.1:1/0"
	for _, c := range commands() {
		for _, r := range []result{
			ctl(t, map[string]string{EnvRedisURL: url}, c.name, "-h"),
			ctl(t, nil, "--redis", url, c.name, "-h"),
			ctl(t, map[string]string{EnvRedisURL: url}, "help"),
		} {
			require.Equal(t, exitOK, r.code, "boundedctl %s -h: %s", c.name, r.stderr)
			require.NotEmpty(t, r.stdout)
			require.NotContains(t, r.stdout+r.stderr, secret, "boundedctl %s -h", c.name)
		}
	}
}

// A job ID the queue package refuses (a space, a brace, too long) is a
// wrong command line: exit 2, a message about the ID, not a Redis failure
// with its address (nor, for show without --queue, a failure of whichever
// queue was searched first).
func TestBadJobID(t *testing.T) {
	b := backends["mini"](t)
	q := mustQueue(t, b.p, "a0")
	_, err := q.Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	for _, args := range [][]string{
		{"show", "bad id"}, {"show", "bad id", "--queue", "a0"}, {"cancel", "a0", "bad{id}"},
		{"show", strings.Repeat("x", 10000)},
	} {
		r := ctl(t, nil, append([]string{"--redis", b.url}, args...)...)
		require.Equal(t, exitUsage, r.code, "boundedctl %v: %s", args, r.stderr)
		require.Contains(t, r.stderr, "job ID", "boundedctl %v", args)
		require.NotContains(t, r.stderr, "redis://", "boundedctl %v: not a Redis failure", args)
	}
}

// failingWriter fails every write, as a closed pipe does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("write |1: broken pipe") }

// tail whose output cannot be written ends with exit 1 at the first
// outcome it fails to print, rather than following on with nothing shown.
func TestTailStopsWhenOutputFails(t *testing.T) {
	b := backends["mini"](t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := mustQueue(t, b.p, "tailed")
	_, err := q.Enqueue(ctx, []byte("x")) // registers the queue
	require.NoError(t, err)
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--redis", b.url, "tail", "tailed", "--json"}, failingWriter{}, &stderr, func(string) string { return "" })
	}()
	testutil.Eventually(t, 10*time.Second, "the follower registered", func() bool {
		n, err := b.p.Client().ZCard(ctx, "{bq}:tails").Result()
		return err == nil && n == 1
	})
	msg, err := json.Marshal([]queue.TailEvent{{Queue: "tailed", ID: "j1", Outcome: "done"}})
	require.NoError(t, err)
	require.NoError(t, b.p.Client().Publish(ctx, "{bq:tailed}:tail", msg).Err())
	code := testutil.Recv(t, done, "tail to end once its output failed (it went on following)")
	require.Equal(t, exitError, code)
	require.Contains(t, stderr.String(), "broken pipe")
}

// requeue --all goes through every page: a dead letter it cannot requeue
// (a malformed element) is reported, not a reason to leave the older pages
// dead.
func TestRequeueAllPastMalformed(t *testing.T) {
	b := backends["mini"](t)
	ctx := context.Background()
	q := mustQueue(t, b.p, "many")
	payloads := make([]string, queue.MaxPageLimit)
	for i := range payloads {
		payloads[i] = "p"
	}
	kill(t, b.p, q, "failed", payloads...)
	// The newest page: a malformed element's dead letter among good ones.
	require.NoError(t, b.p.Client().LPush(ctx, "{bq:many}:ready", "not a job").Err())
	kill(t, b.p, q, "failed", "late")
	// kill waits for one more dead letter; the malformed element's may
	// land a moment later (kill's stop condition can be met by either).
	testutil.Eventually(t, 30*time.Second, "both new dead letters", func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Dead == int64(len(payloads)+2)
	})

	r := ctl(t, nil, "--redis", b.url, "--timeout", "1m", "requeue", "many", "--all", "--yes")
	require.Equal(t, exitError, r.code, "the malformed letter stays: %s", r.stderr)
	require.Contains(t, r.stdout, fmt.Sprintf("requeued %d dead letter(s) of many", len(payloads)+1))
	require.Contains(t, r.stderr, "malformed")
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), s.Dead, "only the malformed letter is left")
	require.Equal(t, int64(len(payloads)+1), s.Ready)
}

// tail --count N prints N outcomes, also when one message of a worker
// (one ack pipeline) carries more.
func TestTailCountWithinOneMessage(t *testing.T) {
	b := backends["mini"](t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := mustQueue(t, b.p, "tailed")
	_, err := q.Enqueue(ctx, []byte("x")) // registers the queue
	require.NoError(t, err)
	var stdout, stderr syncBuffer
	done := background(ctx, &stdout, &stderr, "--redis", b.url, "tail", "tailed", "--json", "--count", "2")
	testutil.Eventually(t, 10*time.Second, "the follower registered", func() bool {
		n, err := b.p.Client().ZCard(ctx, "{bq}:tails").Result()
		return err == nil && n == 1
	})
	evs := make([]queue.TailEvent, 5)
	for i := range evs {
		evs[i] = queue.TailEvent{Queue: "tailed", ID: fmt.Sprint("j", i), Outcome: "done"}
	}
	msg, err := json.Marshal(evs)
	require.NoError(t, err)
	require.NoError(t, b.p.Client().Publish(ctx, "{bq:tailed}:tail", msg).Err())
	require.Equal(t, exitOK, testutil.Recv(t, done, "tail --count 2 to end"), stderr.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	require.Len(t, lines, 2, "tail --count 2 printed:\n%s", stdout.String())
}
