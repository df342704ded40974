package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/queue"
)

func TestUsageErrors(t *testing.T) {
	m := redistest.Mini(t)
	url := "redis://" + m.Addr()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command given"},
		{"unknown command", []string{"--redis", url, "frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"--redis", url, "ls", "q", "--colour"}, "flag provided but not defined: -colour"},
		{"ls without queue", []string{"--redis", url, "ls"}, "ls takes one queue, got 0"},
		{"ls two queues", []string{"--redis", url, "ls", "a", "b"}, "ls takes one queue, got 2"},
		{"bad state", []string{"--redis", url, "ls", "q", "--state", "asleep"}, `--state "asleep"`},
		{"limit zero", []string{"--redis", url, "dead", "q", "--limit", "0"}, "--limit must be in 1..1000, got 0"},
		{"limit too big", []string{"--redis", url, "stats", "--limit", "1001"}, "--limit must be in 1..1000, got 1001"},
		{"bad queue name", []string{"--redis", url, "stats", "a b"}, "must not contain spaces"},
		{"no redis", []string{"stats"}, "no Redis: give --redis URL or set $BOUNDED_REDIS_URL"},
		{"bad timeout", []string{"--redis", url, "--timeout", "0s", "stats"}, "--timeout must be positive"},
		{"purge without yes", []string{"--redis", url, "purge", "q"}, "add --yes to confirm"},
		{"requeue all without yes", []string{"--redis", url, "requeue", "q", "--all"}, "add --yes to confirm"},
		{"requeue nothing", []string{"--redis", url, "requeue", "q"}, "give the IDs of dead letters"},
		{"requeue ids and all", []string{"--redis", url, "requeue", "q", "x", "--all", "--yes"}, "not both"},
		{"cancel without id", []string{"--redis", url, "cancel", "q"}, "cancel takes a queue and a job ID, got 1"},
		{"bad cursor", []string{"--redis", url, "stats", "--cursor", "x", "--limit", "5", "--namespace", "a:b"}, "namespace"},
		{"show search zero", []string{"--redis", url, "show", "id", "--search", "0"}, "--search must be at least 1"},
		{"json on a mutation", []string{"--redis", url, "purge", "q", "--yes", "--json"}, "flag provided but not defined: -json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ctl(t, nil, tc.args...)
			require.Equal(t, exitUsage, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
			require.Contains(t, r.stderr, tc.want)
			require.Empty(t, r.stdout)
		})
	}
}

func TestHelp(t *testing.T) {
	r := ctl(t, nil, "help")
	require.Equal(t, exitOK, r.code)
	for _, c := range commands() {
		require.Contains(t, r.stdout, "  "+c.name+" ")
	}
	r = ctl(t, nil, "ls", "-h")
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stdout, "usage: boundedctl ls [flags] QUEUE")
	require.Contains(t, r.stdout, "-state")
}

func TestRedisURLFromEnvironment(t *testing.T) {
	m := redistest.Mini(t)
	r := ctl(t, map[string]string{EnvRedisURL: "redis://" + m.Addr()}, "stats", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, `"queues": []`)
	// --redis wins over the environment.
	r = ctl(t, map[string]string{EnvRedisURL: "redis://127.0.0.1:1"}, "--redis", "redis://"+m.Addr(), "stats")
	require.Equal(t, exitOK, r.code, r.stderr)
}

func TestNoPasswordPrinted(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
		code int
	}{
		{"malformed URL", func(*testing.T) string { return "redis://user:" + secret + "/x@127.0.0.1:port" }, exitUsage},
		{"bad port", func(*testing.T) string { return "redis://user:" + secret + "@127.0.0.1:99999" }, exitError},
		{"refused", func(*testing.T) string { return "redis://user:" + secret + "@127.0.0.1:1" }, exitError},
		{"pool option", func(*testing.T) string { return "redis://user:" + secret + "@127.0.0.1:1?pool_size=3" }, exitUsage},
		{"wrong password", func(t *testing.T) string {
			srv := redistest.ServerWith(t, redistest.Options{Password: "the-right-one"})
			return "redis://default:" + secret + "@" + srv.Addr()
		}, exitError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url(t)
			for _, env := range []map[string]string{nil, {EnvRedisURL: url}} {
				args := []string{"stats"}
				if env == nil {
					args = []string{"--redis", url, "stats"}
				}
				r := ctl(t, env, args...)
				require.Equal(t, tc.code, r.code, r.stderr)
				require.NotContains(t, r.stderr+r.stdout, secret)
				require.NotEmpty(t, r.stderr)
			}
		})
	}
}

func TestRedisDown(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		stderr := fails(t, exitError, "redis://127.0.0.1:1", "stats")
		require.Contains(t, stderr, "connection refused")
		require.Contains(t, stderr, "redis://127.0.0.1:1")
	})
	t.Run("never answers", func(t *testing.T) {
		url := "redis://" + redistest.BlackHole(t)
		for _, args := range [][]string{
			{"stats"}, {"ls", "q"}, {"dead", "q"}, {"show", "id"}, {"show", "id", "--queue", "q"},
			{"requeue", "q", "id"}, {"purge", "q", "--yes"}, {"cancel", "q", "id"},
		} {
			start := time.Now()
			stderr := fails(t, exitError, url, append([]string{"--timeout", "300ms"}, args...)...)
			// The bound is the --timeout; the margin is for a loaded machine.
			require.Less(t, time.Since(start), 5*time.Second, "boundedctl %v", args)
			require.Contains(t, stderr, "deadline exceeded", "boundedctl %v", args)
		}
	})
}

func TestStats(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		emails := mustQueue(t, b.p, "emails")
		_, err := emails.EnqueueBatch(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
		require.NoError(t, err)
		_, err = emails.Enqueue(ctx, []byte("later"), queue.Delay(time.Hour))
		require.NoError(t, err)
		reports := mustQueue(t, b.p, "reports")
		kill(t, b.p, reports, "boom", "r1", "r2")
		for _, n := range []string{"q1", "q2", "q3"} {
			_, err := mustQueue(t, b.p, n).Enqueue(ctx, []byte("x"))
			require.NoError(t, err)
		}

		all := decode[statsOut](t, b.url, "stats", "--limit", "1000")
		require.Empty(t, all.Next)
		var names []string
		for _, q := range all.Queues {
			names = append(names, q.Name)
		}
		require.Equal(t, []string{"emails", "q1", "q2", "q3", "reports"}, names)
		require.Equal(t, int64(3), all.Queues[0].Ready)
		require.Equal(t, int64(1), all.Queues[0].Delayed)
		require.Equal(t, int64(2), all.Queues[4].Dead)
		require.Equal(t, []queue.ConsumerInfo{}, all.Consumers, "the worker of kill has stopped")

		// Pages: 2 + 2 + 1, by the cursor each page prints.
		var paged []string
		cursor := ""
		for range 3 {
			args := []string{"stats", "--limit", "2"}
			if cursor != "" {
				args = append(args, "--cursor", cursor)
			}
			page := decode[statsOut](t, b.url, args...)
			require.LessOrEqual(t, len(page.Queues), 2)
			for _, q := range page.Queues {
				paged = append(paged, q.Name)
			}
			cursor = page.Next
		}
		require.Empty(t, cursor)
		require.Equal(t, names, paged)

		one := decode[statsOut](t, b.url, "stats", "emails")
		require.Len(t, one.Queues, 1)
		require.Equal(t, all.Queues[0].Name, one.Queues[0].Name)
		require.Equal(t, int64(3), one.Queues[0].Ready)
		// A name that sorts between two queues, a prefix and an extension
		// of one are all unknown.
		for _, name := range []string{"emailr", "email", "emails2", "q", "zzz"} {
			stderr := fails(t, exitError, b.url, "stats", name)
			require.Contains(t, stderr, `unknown queue "`+name+`" in namespace "bq"`)
		}

		text := ok(t, b.url, "stats")
		require.Contains(t, text, "QUEUE")
		require.Regexp(t, `(?m)^emails\s+3\s+1\s+0\s+0\s+0\s`, text)
		require.Regexp(t, `(?m)^reports\s+0\s+0\s+0\s+2\s`, text)
		require.Contains(t, text, "0 live consumer(s)")
		text = ok(t, b.url, "stats", "--limit", "2")
		require.Contains(t, text, "more: --cursor q1")

		// Another namespace holds none of these.
		other := decode[statsOut](t, b.url, "--namespace", "other", "stats")
		require.Empty(t, other.Queues)
	})
}

func TestLsAndDead(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		q := mustQueue(t, b.p, "emails")
		var ready []string
		for _, p := range []string{"one", "two", "three", "<script>alert(1)</script>\n\ttab"} {
			id, err := q.Enqueue(ctx, []byte(p))
			require.NoError(t, err)
			ready = append(ready, id)
		}
		delayed, err := q.Enqueue(ctx, []byte("later"), queue.Delay(time.Hour))
		require.NoError(t, err)

		// Pages of 3 by their cursors. A page may hold fewer jobs than its
		// limit: the ready list holds wake markers, which take a place.
		var paged []string
		cursor := ""
		for {
			args := []string{"ls", "emails", "--limit", "3"}
			if cursor != "" {
				args = append(args, "--cursor", cursor)
			}
			p := decode[queue.JobPage](t, b.url, args...)
			require.LessOrEqual(t, len(p.Jobs), 3)
			if cursor == "" {
				require.Equal(t, "one", string(p.Jobs[0].Payload))
			}
			paged = append(paged, idsOf(p.Jobs)...)
			if cursor = p.Next; cursor == "" {
				break
			}
		}
		require.Equal(t, ready, paged, "next to run first")
		// The ready list holds a wake marker among the jobs (a page of
		// the Inspector's with limit 3 held 2 jobs): ls fills its page.
		full := decode[queue.JobPage](t, b.url, "ls", "emails", "--limit", "4")
		require.Equal(t, ready, idsOf(full.Jobs))

		text := ok(t, b.url, "ls", "emails")
		require.Contains(t, text, ready[0])
		require.Contains(t, text, `"<script>alert(1)</script>\n\ttab"`, "a payload with a newline is quoted on its line")
		require.Equal(t, 1+len(ready), strings.Count(text, "\n"), "a header and one line per job:\n%s", text)

		d := decode[queue.JobPage](t, b.url, "ls", "--state", "delayed", "emails")
		require.Equal(t, []string{delayed}, idsOf(d.Jobs))
		require.False(t, d.Jobs[0].Due.IsZero())

		dead := kill(t, b.p, mustQueue(t, b.p, "reports"), "boom <b>", "x", "y", "z")
		page := decode[queue.JobPage](t, b.url, "dead", "reports", "--limit", "1000")
		require.ElementsMatch(t, dead, idsOf(page.Jobs))
		require.Contains(t, page.Jobs[0].LastError, "boom <b>")
		require.Equal(t, queue.StateDead, page.Jobs[0].State)
		same := decode[queue.JobPage](t, b.url, "ls", "reports", "--state", "dead", "--limit", "1000")
		require.Equal(t, idsOf(page.Jobs), idsOf(same.Jobs))
		none := decode[queue.JobPage](t, b.url, "dead", "emails")
		require.Empty(t, none.Jobs)
		require.Empty(t, none.Next)

		// dead pages with its cursor, newest first, never repeating.
		paged, cursor = nil, ""
		for {
			args := []string{"dead", "reports", "--limit", "2"}
			if cursor != "" {
				args = append(args, "--cursor", cursor)
			}
			p := decode[queue.JobPage](t, b.url, args...)
			require.LessOrEqual(t, len(p.Jobs), 2)
			paged = append(paged, idsOf(p.Jobs)...)
			if cursor = p.Next; cursor == "" {
				break
			}
		}
		require.Equal(t, idsOf(page.Jobs), paged)

		text = ok(t, b.url, "dead", "reports")
		require.Contains(t, text, "DIED")
		require.Contains(t, text, "boom <b>")

		empty := ok(t, b.url, "ls", "emails", "--state", "running")
		require.Contains(t, empty, "no running jobs")

		stderr := fails(t, exitError, b.url, "ls", "nosuch")
		require.Contains(t, stderr, `unknown queue "nosuch"`)
		stderr = fails(t, exitError, b.url, "dead", "nosuch")
		require.Contains(t, stderr, `unknown queue "nosuch"`)
		stderr = fails(t, exitUsage, b.url, "dead", "reports", "--cursor", "bm90LWEtY3Vyc29y")
		require.Contains(t, stderr, "cursor")
		deadCursor := decode[queue.JobPage](t, b.url, "dead", "reports", "--limit", "1").Next
		require.NotEmpty(t, deadCursor)
		stderr = fails(t, exitUsage, b.url, "ls", "emails", "--state", "delayed", "--cursor", deadCursor)
		require.Contains(t, stderr, `a cursor of state "dead", not "delayed"`)
	})
}
