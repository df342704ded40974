package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Results collects the measurements and checks of a whole run. It is safe
// for concurrent use (isolated runs record at the same time).
type Results struct {
	mu     sync.Mutex
	tables []*table
}

// table is one scenario's rows, in the order they were first recorded.
type table struct {
	s        *Scenario
	rows     []*row
	notes    []string
	passed   int
	failures []string
}

type row struct {
	cas, metric string
	better      Better
	vals        [numImpls][]float64
}

func (res *Results) table(s *Scenario) *table {
	for _, t := range res.tables {
		if t.s == s {
			return t
		}
	}
	t := &table{s: s}
	res.tables = append(res.tables, t)
	return t
}

func (res *Results) record(s *Scenario, cas, metric string, better Better, impl Impl, v float64) {
	res.mu.Lock()
	defer res.mu.Unlock()
	t := res.table(s)
	i := slices.IndexFunc(t.rows, func(r *row) bool { return r.cas == cas && r.metric == metric })
	if i < 0 {
		t.rows = append(t.rows, &row{cas: cas, metric: metric, better: better})
		i = len(t.rows) - 1
	}
	t.rows[i].vals[impl] = append(t.rows[i].vals[impl], v)
}

func (res *Results) check(s *Scenario, ok bool, what string) {
	res.mu.Lock()
	defer res.mu.Unlock()
	t := res.table(s)
	if ok {
		t.passed++
	} else {
		t.failures = append(t.failures, what)
	}
}

func (res *Results) note(s *Scenario, n string) {
	res.mu.Lock()
	defer res.mu.Unlock()
	t := res.table(s)
	if !slices.Contains(t.notes, n) {
		t.notes = append(t.notes, n)
	}
}

// Failures returns every failed check and failed run, scenario by scenario.
func (res *Results) Failures() []string {
	res.mu.Lock()
	defer res.mu.Unlock()
	var out []string
	for _, t := range res.tables {
		out = append(out, t.failures...)
	}
	return out
}

// Markdown renders one table per scenario: for each case and metric the
// median and range (min-max) over the repetitions of each implementation,
// and the ratio of the medians bounded/peer; then the scenario's notes and
// its checks.
func (res *Results) Markdown() string {
	res.mu.Lock()
	defer res.mu.Unlock()
	var b strings.Builder
	for _, t := range res.tables {
		t.markdown(&b)
	}
	return b.String()
}

func (t *table) markdown(b *strings.Builder) {
	s := t.s
	fmt.Fprintf(b, "### %s\n\n", s.Title)
	hasRef := s.Reference != ""
	head := []string{"case", "metric", "better", "bounded", s.Peer, "bounded/" + shortName(s.Peer)}
	if hasRef {
		head = append(head, s.Reference)
	}
	writeRow(b, head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = "---"
		if i >= 3 {
			sep[i] = "--:"
		}
	}
	writeRow(b, sep)
	last := ""
	for _, r := range t.rows {
		cas := r.cas
		if cas == last {
			cas = "" // one case name per group of rows
		}
		last = r.cas
		bs, ps := summarize(r.vals[Bounded]), summarize(r.vals[Peer])
		cells := []string{cas, r.metric, betterWord(r.better), fmtSummary(bs), fmtSummary(ps), fmtRatio(bs, ps)}
		if hasRef {
			cells = append(cells, fmtSummary(summarize(r.vals[Reference])))
		}
		writeRow(b, cells)
	}
	b.WriteString("\n")
	for _, n := range s.Notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	for _, n := range t.notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	if len(t.failures) == 0 {
		fmt.Fprintf(b, "- Correctness checks: all %d passed.\n", t.passed)
	} else {
		fmt.Fprintf(b, "- **Correctness checks: %d FAILED**, %d passed:\n", len(t.failures), t.passed)
		for _, f := range t.failures {
			fmt.Fprintf(b, "  - %s\n", f)
		}
	}
	b.WriteString("\n")
}

func writeRow(b *strings.Builder, cells []string) {
	b.WriteString("|")
	for _, c := range cells {
		b.WriteString(" ")
		b.WriteString(strings.ReplaceAll(c, "|", "\\|"))
		b.WriteString(" |")
	}
	b.WriteString("\n")
}

func betterWord(b Better) string {
	switch b {
	case Higher:
		return "higher"
	case Lower:
		return "lower"
	}
	return "equal"
}

// shortName is a column name without its version: "asynq v0.26.0" ->
// "asynq".
func shortName(s string) string {
	name, _, _ := strings.Cut(s, " ")
	return name
}
