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
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/queue"
)

func TestShow(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, n := range []string{"a", "b", "c"} {
			_, err := mustQueue(t, b.p, n).Enqueue(ctx, []byte("filler"))
			require.NoError(t, err)
		}
		id, err := mustQueue(t, b.p, "b").Enqueue(ctx, []byte("hello\x00world"), queue.MaxAttempts(5))
		require.NoError(t, err)
		dead := kill(t, b.p, mustQueue(t, b.p, "c"), "it broke", "gone")

		info := decode[queue.JobInfo](t, b.url, "show", id, "--queue", "b")
		require.Equal(t, id, info.ID)
		require.Equal(t, "b", info.Queue)
		require.Equal(t, queue.StateReady, info.State)
		require.Equal(t, 5, info.MaxAttempts)
		require.Equal(t, "hello\x00world", string(info.Payload))

		// Without --queue, it is searched in every queue.
		found := decode[queue.JobInfo](t, b.url, "show", id)
		require.Equal(t, info, found)
		d := decode[queue.JobInfo](t, b.url, "show", dead[0])
		require.Equal(t, "c", d.Queue)
		require.Equal(t, queue.StateDead, d.State)
		require.Contains(t, d.LastError, "it broke")

		text := ok(t, b.url, "show", id)
		require.Regexp(t, `(?m)^state\s+ready$`, text)
		require.Contains(t, text, `11 bytes: "hello\x00world"`, "a NUL is quoted")

		stderr := fails(t, exitError, b.url, "show", "nosuchid", "--queue", "b")
		require.Contains(t, stderr, "job not found")
		stderr = fails(t, exitError, b.url, "show", "nosuchid")
		require.Contains(t, stderr, `job "nosuchid" is in none of the 3 queue(s) searched in namespace "bq"`)
		stderr = fails(t, exitError, b.url, "show", "nosuchid", "--search", "2")
		require.Contains(t, stderr, "is in none of the 2 queue(s) searched")
		require.Contains(t, stderr, "more queues were not searched (--search 2): give --queue")
		// The search stops at --search queues: "c" (the third) is not reached.
		stderr = fails(t, exitError, b.url, "show", dead[0], "--search", "2")
		require.Contains(t, stderr, "more queues were not searched")
		stderr = fails(t, exitError, b.url, "show", id, "--queue", "nosuch")
		require.Contains(t, stderr, `unknown queue "nosuch"`)
	})
}

func TestRequeueAndPurge(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		q := mustQueue(t, b.p, "jobs")
		var payloads []string
		for i := range 7 {
			payloads = append(payloads, strings.Repeat("p", i+1))
		}
		dead := kill(t, b.p, q, "failed", payloads...)
		deadCount := func() int64 {
			s, err := q.Stats(ctx)
			require.NoError(t, err)
			return s.Dead
		}

		require.Contains(t, ok(t, b.url, "requeue", "jobs", dead[0], dead[1]), "requeued 2 dead letter(s) of jobs")
		require.Equal(t, int64(5), deadCount())
		info := decode[queue.JobInfo](t, b.url, "show", dead[0], "--queue", "jobs")
		require.Equal(t, queue.StateReady, info.State)

		// An ID that is not dead: the others still move, and it is named.
		r := ctl(t, nil, "--redis", b.url, "requeue", "jobs", dead[2], "nosuch")
		require.Equal(t, exitError, r.code)
		require.Contains(t, r.stdout, "requeued 1 dead letter(s)")
		require.Contains(t, r.stderr, "nosuch")
		require.Equal(t, int64(4), deadCount())

		stderr := fails(t, exitUsage, b.url, "requeue", "jobs", "--all")
		require.Contains(t, stderr, "add --yes")
		require.Equal(t, int64(4), deadCount(), "nothing moved without --yes")
		stderr = fails(t, exitError, b.url, "requeue", "nosuch", "--all", "--yes")
		require.Contains(t, stderr, `unknown queue "nosuch"`)

		// --all pages through the dead letters (MaxPageLimit a page).
		require.Contains(t, ok(t, b.url, "requeue", "jobs", "--all", "--yes"), "requeued 4 dead letter(s) of jobs")
		require.Zero(t, deadCount())
		s, err := q.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(7), s.Ready)

		kill(t, b.p, q, "again", "one more")
		require.Equal(t, int64(8), deadCount(), "the requeued ones died again with it")
		stderr = fails(t, exitUsage, b.url, "purge", "jobs")
		require.Contains(t, stderr, `purge deletes every dead letter of "jobs": add --yes to confirm`)
		require.Equal(t, int64(8), deadCount())
		stderr = fails(t, exitError, b.url, "purge", "nosuch", "--yes")
		require.Contains(t, stderr, `unknown queue "nosuch"`)
		require.Contains(t, ok(t, b.url, "purge", "jobs", "--yes"), "purged 8 dead letter(s) of jobs")
		require.Zero(t, deadCount())
		require.Contains(t, ok(t, b.url, "purge", "jobs", "--yes"), "purged 0 dead letter(s) of jobs")
	})
}

func TestCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		q := mustQueue(t, b.p, "work")
		waiting, err := q.Enqueue(ctx, []byte("w"), queue.Delay(time.Hour))
		require.NoError(t, err)
		require.Contains(t, ok(t, b.url, "cancel", "work", waiting), "cancelled "+waiting+" of work")
		info := decode[queue.JobInfo](t, b.url, "show", waiting, "--queue", "work")
		require.Equal(t, queue.StateCancelled, info.State)

		// A running job: its handler's context is cancelled.
		g := lifecycle.New()
		c, err := queue.NewConsumer(b.p, queue.ConsumerConfig{Control: true})
		require.NoError(t, err)
		started := make(chan string, 1)
		cause := make(chan error, 1)
		w, err := queue.NewWorker(c, q, func(ctx context.Context, j *queue.Job) error {
			started <- j.ID
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return ctx.Err()
		}, queue.WorkerConfig{Concurrency: 1})
		require.NoError(t, err)
		require.NoError(t, w.Start(g))
		defer func() {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			require.NoError(t, g.Close(cctx))
		}()
		running, err := q.Enqueue(ctx, []byte("r"))
		require.NoError(t, err)
		require.Equal(t, running, testutil.Recv(t, started, "the job to start"))

		page := decode[queue.JobPage](t, b.url, "ls", "work", "--state", "running")
		require.Equal(t, []string{running}, idsOf(page.Jobs))
		require.NotEmpty(t, page.Jobs[0].Consumer)
		st := decode[statsOut](t, b.url, "stats", "work")
		require.Equal(t, int64(1), st.Queues[0].InFlight)
		require.Len(t, st.Consumers, 1)
		require.Equal(t, map[string]int64{"work": 1}, st.Consumers[0].InFlight)

		require.Contains(t, ok(t, b.url, "cancel", "work", running), "cancelled")
		require.True(t, errors.Is(testutil.Recv(t, cause, "the handler's cancel"), queue.ErrCancelled))

		dead := kill(t, b.p, mustQueue(t, b.p, "doomed"), "dead already", "d")
		stderr := fails(t, exitError, b.url, "cancel", "doomed", dead[0])
		require.Contains(t, stderr, "job already finished")
		require.NotContains(t, stderr, "(redis ", "the queue's answer, not a Redis failure")

		stderr = fails(t, exitError, b.url, "cancel", "work", "nosuchid")
		require.Contains(t, stderr, "job not found")
		stderr = fails(t, exitError, b.url, "cancel", "nosuch", running)
		require.Contains(t, stderr, `unknown queue "nosuch"`)
	})
}

// pause and resume act on the queue for the whole fleet (queue.Paused says
// so), stats (table and JSON) and ls show the state, and an unknown queue
// is refused without being paused or registered.
func TestPauseResume(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		q := mustQueue(t, b.p, "q")
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
		paused := func() bool {
			t.Helper()
			v, err := q.Paused(ctx)
			require.NoError(t, err)
			return v
		}
		statsJSON := func() bool {
			t.Helper()
			var out struct{ Queues []queue.QueueInfo }
			require.NoError(t, json.Unmarshal([]byte(ok(t, b.url, "stats", "q", "--json")), &out))
			require.Len(t, out.Queues, 1)
			return out.Queues[0].Paused
		}
		require.Regexp(t, `(?m)^q .* active$`, ok(t, b.url, "stats"))
		require.NotContains(t, ok(t, b.url, "ls", "q"), "paused")

		require.Contains(t, ok(t, b.url, "pause", "q"), "paused q: no worker takes its jobs until 'boundedctl resume q'")
		require.True(t, paused())
		require.Regexp(t, `(?m)^q .* paused$`, ok(t, b.url, "stats"))
		require.True(t, statsJSON())
		require.Contains(t, ok(t, b.url, "ls", "q"), "queue q is paused: no worker takes its jobs until 'boundedctl resume q'")
		require.Contains(t, ok(t, b.url, "pause", "q"), "paused q", "pausing a paused queue is no error")

		require.Contains(t, ok(t, b.url, "resume", "q"), "resumed q")
		require.False(t, paused())
		require.False(t, statsJSON())
		require.Regexp(t, `(?m)^q .* active$`, ok(t, b.url, "stats"))

		for _, cmd := range []string{"pause", "resume"} {
			stderr := fails(t, exitError, b.url, cmd, "nosuch")
			require.Contains(t, stderr, `unknown queue "nosuch"`)
			stderr = fails(t, exitUsage, b.url, cmd)
			require.Contains(t, stderr, cmd+" takes one queue, got 0")
			stderr = fails(t, exitUsage, b.url, cmd, "a{b}")
			require.Contains(t, stderr, `queue name "a{b}"`)
		}
		v, err := mustQueue(t, b.p, "nosuch").Paused(ctx)
		require.NoError(t, err)
		require.False(t, v, "a refused pause paused the queue")
		require.NotContains(t, ok(t, b.url, "stats"), "nosuch", "a refused pause registered the queue")
	})
}

func TestRequeueAllPages(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		q := mustQueue(t, b.p, "many")
		payloads := make([]string, queue.MaxPageLimit+5)
		for i := range payloads {
			payloads[i] = "p"
		}
		kill(t, b.p, q, "failed", payloads...)
		out := ok(t, b.url, "requeue", "many", "--all", "--yes", "--timeout", "1m")
		require.Contains(t, out, fmt.Sprintf("requeued %d dead letter(s) of many", len(payloads)))
		s, err := q.Stats(context.Background())
		require.NoError(t, err)
		require.Zero(t, s.Dead)
		require.Equal(t, int64(len(payloads)), s.Ready)
	})
}
