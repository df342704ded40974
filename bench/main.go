// Command bench compares bounded's packages with the libraries users would
// otherwise pick, on one real Redis, and prints one markdown table per
// comparison:
//
//	cd bench && go run .                          # everything, about 6 minutes on 2 cores
//	cd bench && go run . -quick                   # a smoke run of about a minute
//	cd bench && go run . -scenarios queue -reps 5 # one scenario, more repetitions
//	cd bench && go run . -write                   # also save bench/RESULTS.md
//
// It starts its own redis-server on a free loopback port (never 6379) with
// persistence off, and stops it at the end.
//
// # Fairness
//
// Every implementation runs the same workload with the same payloads on the
// same server. Before each run the server is emptied (FLUSHALL, SCRIPT
// FLUSH) and its statistics zeroed (CONFIG RESETSTAT), so every run starts
// cold in the same way. Each case runs -reps repetitions, and each
// repetition starts with the next implementation (bounded, peer,
// reference; then peer, reference, bounded; ...), so none always runs first.
// Tables give the median and the range over the repetitions, and the ratio
// of the medians bounded/peer. Peers get their documented production
// settings; each table's notes say which, and which of their defaults
// matter.
//
// Counts that timing cannot change (idle commands per second, connections)
// are measured with every implementation on a fresh server of its own, all
// at once, over a fixed window of whole 5 s block-timeout cycles.
//
// # Correctness
//
// Every run checks what it measured while it measures: every job ran
// exactly once (no failure happens in these runs, so at-least-once must
// deliver exactly once) and nothing is left in Redis; every limiter decision
// is the one exact GCRA gives; every GET returned its value; every cache
// read returned the value written or loaded, local hits sent Redis nothing,
// and a loaded value reads back from Redis as loaded. A failed check
// is listed under its table and makes the program exit with status 1, so a
// fast wrong answer cannot win.
//
// # Adding a scenario
//
// A scenario is a method of catalog in a file of its own (see scenario.go):
// add the file and it is in the tables and in -scenarios.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	// go-redis logs failed dials through a process-wide logger; in the
	// Redis-stopped cases they would scroll over the progress line. The
	// runs report the errors that matter themselves.
	redis.SetLogger(quiet{})
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// options are the parsed flags.
type options struct {
	scenarios []string
	reps      int
	sizes     Sizes
	write     bool
	out       string
	list      bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := defaultSizes()
	var (
		names = fs.String("scenarios", "", "comma-separated scenarios to run (default: all; see -list)")
		reps  = fs.Int("reps", 3, "repetitions of every case; medians need at least 3 (-quick makes it 1)")
		jobs  = fs.Int("jobs", def.Jobs, "jobs per queue drain (-quick makes it 5,000)")
		keys  = fs.Int("keys", def.Keys, "distinct keys of the many-keys cases")
		quick = fs.Bool("quick", false, "small sizes and one repetition: a smoke run of about a minute")
		write = fs.Bool("write", false, "also write the report to -out")
		out   = fs.String("out", "RESULTS.md", "where -write saves the report")
		list  = fs.Bool("list", false, "list the scenarios and exit")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run . [flags]\n\nCompares bounded with its peers on a redis-server it starts, and prints markdown tables.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o := options{reps: *reps, sizes: def, write: *write, out: *out, list: *list}
	if *quick {
		o.sizes = quickSizes()
		if !set["reps"] {
			o.reps = 1
		}
	}
	if set["jobs"] || !*quick {
		o.sizes.Jobs = *jobs
	}
	if set["keys"] || !*quick {
		o.sizes.Keys = *keys
	}
	for n := range strings.SplitSeq(*names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.scenarios = append(o.scenarios, n)
		}
	}
	switch {
	case o.reps < 1:
		return options{}, fmt.Errorf("-reps must be at least 1, got %d", o.reps)
	case o.sizes.Jobs < 30:
		return options{}, fmt.Errorf("-jobs must be at least 30, got %d", o.sizes.Jobs)
	case o.sizes.Keys < 1:
		return options{}, fmt.Errorf("-keys must be at least 1, got %d", o.sizes.Keys)
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err == flag.ErrHelp {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	all := allScenarios(o.sizes)
	if o.list {
		for _, s := range all {
			fmt.Fprintf(stdout, "%-10s %s\n", s.Name, s.Title)
		}
		return 0
	}
	scens, err := selectScenarios(all, o.scenarios)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := startServer(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	defer srv.Close()

	start := time.Now()
	res := &Results{}
	rn := &runner{srv: srv, sizes: o.sizes, reps: o.reps, res: res, prog: newProgress(stderr, steps(scens, o.reps))}
	for i := range scens {
		if err := rn.scenario(ctx, &scens[i]); err != nil {
			fmt.Fprintln(stderr, "\nbench:", err)
			return 1
		}
	}
	rn.prog.finish()

	doc := report(describeMachine(), commandLine(args), o.reps, time.Since(start), res.Markdown())
	fmt.Fprint(stdout, doc)
	if o.write {
		if err := os.WriteFile(o.out, []byte(doc), 0o644); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		fmt.Fprintf(stderr, "wrote %s\n", o.out)
	}
	if f := res.Failures(); len(f) > 0 {
		fmt.Fprintf(stderr, "bench: %d correctness check(s) failed:\n", len(f))
		for _, x := range f {
			fmt.Fprintln(stderr, "  -", x)
		}
		return 1
	}
	return 0
}

// commandLine is the command that reproduces this run.
func commandLine(args []string) string {
	parts := []string{"cd bench && go run ."}
	for _, a := range args {
		if strings.ContainsAny(a, " \t'\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
