package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/queue"
)

// syncBuffer is a bytes.Buffer safe to read while boundedctl writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// background runs boundedctl on its own goroutine; its exit code arrives on
// the returned channel.
func background(ctx context.Context, stdout, stderr *syncBuffer, args ...string) <-chan int {
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, stdout, stderr, func(string) string { return "" }) }()
	return done
}

func TestTail(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		q := mustQueue(t, b.p, "tailed")
		_, err := q.Enqueue(ctx, []byte("before")) // registers the queue
		require.NoError(t, err)

		g := lifecycle.New()
		c, err := queue.NewConsumer(b.p, queue.ConsumerConfig{ConsumerID: "c1", HeartbeatInterval: queue.MinHeartbeatInterval, HeartbeatTTL: time.Second})
		require.NoError(t, err)
		w, err := queue.NewWorker(c, q, func(_ context.Context, j *queue.Job) error {
			if string(j.Payload) == "fail" {
				return errors.New("no luck\nat all")
			}
			return nil
		}, queue.WorkerConfig{Concurrency: 1})
		require.NoError(t, err)
		require.NoError(t, w.Start(g))
		defer func() {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			require.NoError(t, g.Close(cctx))
		}()

		for _, format := range []string{"text", "json"} {
			t.Run(format, func(t *testing.T) {
				var stdout, stderr syncBuffer
				args := []string{"--redis", b.url, "tail", "tailed", "--count", "2"}
				if format == "json" {
					args = append(args, "--json")
				}
				done := background(ctx, &stdout, &stderr, args...)
				// The worker learns of the follower at a heartbeat that read
				// the registration: wait for it, then for two more beats.
				testutil.Eventually(t, 10*time.Second, "the tail to register", func() bool {
					n, err := b.p.Client().ZCard(ctx, "{bq}:tails").Result()
					return err == nil && n == 1
				})
				for range 2 {
					beat, err := b.p.Client().ZScore(ctx, "{bq}:heartbeats", "c1").Result()
					require.NoError(t, err)
					testutil.Eventually(t, 10*time.Second, "a heartbeat", func() bool {
						s, err := b.p.Client().ZScore(ctx, "{bq}:heartbeats", "c1").Result()
						return err == nil && s > beat
					})
				}
				okID, err := q.Enqueue(ctx, []byte("ok"))
				require.NoError(t, err)
				failID, err := q.Enqueue(ctx, []byte("fail"), queue.MaxAttempts(1))
				require.NoError(t, err)
				require.Equal(t, exitOK, testutil.Recv(t, done, "tail to stop after --count 2"), stderr.String())

				lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
				require.Len(t, lines, 2, stdout.String())
				if format == "text" {
					require.Contains(t, stderr.String(), "following 1 queue(s)")
					require.Regexp(t, `  tailed  done   `+okID+`$`, lines[0])
					require.Regexp(t, `  tailed  dead   `+failID+`  after 1 attempt\(s\): ".*no luck\\nat all"$`, lines[1])
					return
				}
				require.Empty(t, stderr.String())
				var evs []queue.TailEvent
				for _, l := range lines {
					var ev queue.TailEvent
					dec := json.NewDecoder(strings.NewReader(l))
					dec.DisallowUnknownFields()
					require.NoError(t, dec.Decode(&ev), l)
					evs = append(evs, ev)
				}
				require.Equal(t, okID, evs[0].ID)
				require.Equal(t, "done", evs[0].Outcome)
				require.Equal(t, failID, evs[1].ID)
				require.Equal(t, "dead", evs[1].Outcome)
				require.Contains(t, evs[1].Error, "no luck\nat all")
			})
		}
	})
}

func TestTailInterrupted(t *testing.T) {
	m := redistest.Mini(t)
	p := mustPool(t, m.Addr())
	_, err := mustQueue(t, p, "q").Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := background(ctx, &stdout, &stderr, "--redis", "redis://"+m.Addr(), "tail", "q")
	testutil.Eventually(t, 10*time.Second, "the tail to register", func() bool {
		n, err := p.Client().ZCard(context.Background(), "{bq}:tails").Result()
		return err == nil && n == 1
	})
	cancel() // as Ctrl-C does
	require.Equal(t, exitOK, testutil.Recv(t, done, "tail to stop"), stderr.String())
	n, err := p.Client().ZCard(context.Background(), "{bq}:tails").Result()
	require.NoError(t, err)
	require.Zero(t, n, "the tail unregistered")
}

func TestTailFailures(t *testing.T) {
	m := redistest.Mini(t)
	url := "redis://" + m.Addr()
	_, err := mustQueue(t, mustPool(t, m.Addr()), "q").Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	require.Contains(t, fails(t, exitUsage, url, "tail"), "tail takes 1 to 100 queues, got 0")
	require.Contains(t, fails(t, exitUsage, url, "tail", "q", "--count", "-1"), "--count must not be negative")
	require.Contains(t, fails(t, exitError, url, "tail", "q", "nosuch"), `unknown queue "nosuch"`)
	require.Contains(t, fails(t, exitError, "redis://"+redistest.BlackHole(t), "--timeout", "300ms", "tail", "q"), "deadline exceeded")

	srv := redistest.Server(t)
	sp := mustPool(t, srv.Addr())
	_, err = mustQueue(t, sp, "q").Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	var stdout, stderr syncBuffer
	done := background(context.Background(), &stdout, &stderr, "--redis", srv.URL(), "tail", "q")
	testutil.Eventually(t, 10*time.Second, "the tail to register", func() bool {
		n, err := sp.Client().ZCard(context.Background(), "{bq}:tails").Result()
		return err == nil && n == 1
	})
	srv.Kill()
	require.Equal(t, exitError, testutil.Recv(t, done, "tail to end with its Redis"))
	require.Contains(t, stderr.String(), "tail subscription lost")
}
