package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/bounded-go/bounded/queue"
)

func (e *env) writeJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (e *env) table() *tabwriter.Writer {
	return tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
}

// when prints an instant in UTC to the second, "-" for none.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.DateTime)
}

// text prints bytes (a payload, an error) on one line of a table: quoted
// when they are not printable UTF-8 or hold a tab or newline, and cut to n
// runes.
func text(b []byte, n int) string {
	s := string(b)
	cut := false
	if utf8.RuneCountInString(s) > n {
		s, cut = string([]rune(s)[:n]), true
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) {
		s = strconv.Quote(s)
	}
	if s == "" {
		s = "-"
	}
	if cut {
		s += "…"
	}
	return s
}

// stateOf says whether the queue's workers take its jobs.
func stateOf(q queue.QueueInfo) string {
	if q.Paused {
		return "paused"
	}
	return "active"
}

func (e *env) printStats(out statsOut) error {
	w := e.table()
	fmt.Fprintln(w, "QUEUE\tREADY\tDELAYED\tRUNNING\tDEAD\tCONSUMERS\tLAST SEEN\tSTATE")
	for _, q := range out.Queues {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", q.Name, q.Ready, q.Delayed, q.InFlight, q.Dead, q.Consumers, when(q.LastSeen), stateOf(q))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if out.Next != "" {
		fmt.Fprintf(e.stdout, "more: --cursor %s\n", out.Next)
	}
	fmt.Fprintf(e.stdout, "\n%d live consumer(s)\n", len(out.Consumers))
	if len(out.Consumers) == 0 {
		return nil
	}
	w = e.table()
	fmt.Fprintln(w, "CONSUMER\tDEADLINE\tHOLDING")
	for _, c := range out.Consumers {
		var held []string
		for _, q := range c.Queues {
			held = append(held, fmt.Sprintf("%s=%d", q, c.InFlight[q]))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", c.ID, when(c.Deadline), strings.Join(held, " "))
	}
	return w.Flush()
}

func (e *env) printJobs(qi queue.QueueInfo, st queue.JobState, page queue.JobPage) error {
	if qi.Paused {
		fmt.Fprintf(e.stdout, "queue %s is paused: no worker takes its jobs until 'boundedctl resume %s'\n", qi.Name, qi.Name)
	}
	w := e.table()
	col := map[queue.JobState]string{queue.StateDelayed: "DUE", queue.StateRunning: "CONSUMER", queue.StateDead: "DIED"}[st]
	if col == "" {
		col = "ENQUEUED"
	}
	fmt.Fprintf(w, "ID\tFAILED\t%s\tERROR\tSIZE\tPAYLOAD\n", col)
	for _, j := range page.Jobs {
		at := when(j.EnqueuedAt)
		switch st {
		case queue.StateDelayed:
			at = when(j.Due)
		case queue.StateRunning:
			at = j.Consumer
		case queue.StateDead:
			at = when(j.DiedAt)
		}
		id := j.ID
		if j.Malformed {
			id += " (malformed)"
		}
		errText := j.LastError
		if errText == "" {
			errText = j.Error
		}
		payload := text(j.Payload, 40)
		if j.PayloadApart && len(j.Payload) == 0 {
			payload = "(kept apart: --payloads reads it)"
		}
		fmt.Fprintf(w, "%s\t%d/%d\t%s\t%s\t%d\t%s\n", id, j.Attempt, j.MaxAttempts, at, text([]byte(errText), 40), j.PayloadSize, payload)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(e.stdout, "more: --cursor %s\n", page.Next)
	}
	if len(page.Jobs) == 0 {
		fmt.Fprintf(e.stdout, "no %s jobs\n", st)
	}
	return nil
}

func (e *env) printJob(j queue.JobInfo) error {
	w := e.table()
	row := func(k, v string) {
		if v != "" && v != "-" {
			fmt.Fprintf(w, "%s\t%s\n", k, v)
		}
	}
	row("id", j.ID)
	row("queue", j.Queue)
	row("state", string(j.State))
	row("failed runs", fmt.Sprintf("%d of at most %d", j.Attempt, j.MaxAttempts))
	row("deliveries", strconv.Itoa(j.Deliveries))
	row("enqueued", when(j.EnqueuedAt))
	row("due", when(j.Due))
	row("consumer", j.Consumer)
	row("died", when(j.DiedAt))
	row("last error", text([]byte(j.LastError), 200))
	if j.Progress != nil {
		row("progress", text(j.Progress, 200))
	}
	if j.Result != nil {
		row("result", text(j.Result, 200))
	}
	row("payload", fmt.Sprintf("%d bytes: %s", len(j.Payload), text(j.Payload, 200)))
	return w.Flush()
}
