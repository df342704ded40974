package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed: Redis, an unknown queue or job, ...
	exitUsage = 2 // the command line is wrong: flags, arguments, a missing --yes
)

// EnvRedisURL names the environment variable read when --redis is not given.
const EnvRedisURL = "BOUNDED_REDIS_URL"

// defaultTimeout bounds a whole command (tail excepted: it runs until
// interrupted, and its --timeout bounds its start).
const defaultTimeout = 10 * time.Second

// usageError is a wrong command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// env is what a command runs with: its streams, flags common to all
// commands, and (built lazily, once the flags parsed) the pool and the
// inspector.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	redisURL  string
	namespace string
	timeout   time.Duration
	json      bool

	p  *pool.Pool
	in *queue.Inspector
}

// command is one subcommand.
type command struct {
	name    string
	args    string // synopsis of the positional arguments
	summary string
	read    bool // a read command: it has --json
	flags   func(fs *flag.FlagSet, o *opts)
	run     func(ctx context.Context, e *env, o *opts, args []string) error
}

// opts holds every subcommand's own flags (each subcommand registers the
// ones it has).
type opts struct {
	state   string
	limit   int
	cursor  string
	all     bool
	yes     bool
	queue   string
	search  int
	payload bool
	count   int
}

func commands() []command {
	return []command{
		{name: "stats", args: "[QUEUE]", summary: "queues with their counts (one page), and the live consumers", read: true, flags: pageFlags, run: runStats},
		{name: "ls", args: "QUEUE", summary: "jobs of a queue in one state, one page", read: true, flags: lsFlags, run: runLs},
		{name: "show", args: "ID", summary: "one job: where it is, attempts, errors, progress, result, payload", read: true, flags: showFlags, run: runShow},
		{name: "dead", args: "QUEUE", summary: "dead letters of a queue, newest first, one page", read: true, flags: deadFlags, run: runDead},
		{name: "requeue", args: "QUEUE ID... | QUEUE --all --yes", summary: "move dead letters back to the ready list", flags: requeueFlags, run: runRequeue},
		{name: "purge", args: "QUEUE --yes", summary: "delete every dead letter of a queue", flags: yesFlag, run: runPurge},
		{name: "cancel", args: "QUEUE ID", summary: "cancel a waiting or running job", run: runCancel},
		{name: "pause", args: "QUEUE", summary: "stop the queue's workers from taking jobs", run: runPause},
		{name: "resume", args: "QUEUE", summary: "let the queue's workers take jobs again", run: runResume},
		{name: "tail", args: "QUEUE...", summary: "print jobs' outcomes (done, retry, dead) as they happen", read: true, flags: tailFlags, run: runTail},
	}
}

// run runs boundedctl with args (without the program name) and returns the
// exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	err := e.run(ctx, args)
	if e.p != nil {
		if cerr := e.p.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case isUsage(err):
		fmt.Fprintln(stderr, "boundedctl:", err)
		fmt.Fprintln(stderr, "Run 'boundedctl help' for usage.")
		return exitUsage
	default:
		fmt.Fprintln(stderr, "boundedctl:", err)
		return exitError
	}
}

func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue) || errors.Is(err, queue.ErrInvalidArgument) ||
		errors.Is(err, pool.ErrInvalidConfig) || errors.Is(err, queue.ErrInvalidConfig)
}

func (e *env) run(ctx context.Context, args []string) error {
	global := flag.NewFlagSet("boundedctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	e.commonFlags(global)
	if err := global.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if e.timeout <= 0 {
		return usagef("--timeout must be positive, got %s", e.timeout)
	}
	args = global.Args()
	if len(args) == 0 {
		e.usage(e.stderr)
		return usagef("no command given")
	}
	name, args := args[0], args[1:]
	if name == "help" || name == "-h" || name == "--help" {
		e.usage(e.stdout)
		return nil
	}
	cmds := commands()
	i := slices.IndexFunc(cmds, func(c command) bool { return c.name == name })
	if i < 0 {
		return usagef("unknown command %q", name)
	}
	c := cmds[i]
	fs := flag.NewFlagSet("boundedctl "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.commonFlags(fs)
	var o opts
	if c.read {
		fs.BoolVar(&e.json, "json", false, "print JSON instead of a table")
	}
	if c.flags != nil {
		c.flags(fs, &o)
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(e.stdout, "usage: boundedctl %s [flags] %s\n\n%s\n\nFlags:\n", c.name, c.args, c.summary)
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return usagef("%s: %v", c.name, err)
	}
	if e.timeout <= 0 {
		return usagef("--timeout must be positive, got %s", e.timeout)
	}
	if err := e.connect(); err != nil {
		return err
	}
	if c.name != "tail" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.timeout)
		defer cancel()
	}
	return c.run(ctx, e, &o, pos)
}

// commonFlags registers the flags every command accepts, before or after
// its name. Each parse keeps what an earlier one set unless given again.
func (e *env) commonFlags(fs *flag.FlagSet) {
	def := e.redisURL
	if def == "" {
		def = e.getenv(EnvRedisURL)
	}
	e.redisURL = def
	fs.Var(redisURLFlag{&e.redisURL}, "redis", "Redis `URL` (redis://[user:password@]host:port[/db], rediss:// for TLS); default $"+EnvRedisURL)
	ns := e.namespace
	if ns == "" {
		ns = queue.DefaultNamespace
	}
	fs.StringVar(&e.namespace, "namespace", ns, "namespace of the queues")
	t := e.timeout
	if t == 0 {
		t = defaultTimeout
	}
	fs.DurationVar(&e.timeout, "timeout", t, "bound on the whole command (tail: on its start, the subscription included)")
}

// parseInterspersed parses flags anywhere among the positional arguments
// ("ls QUEUE --state dead"), which flag.Parse alone stops at. "--" ends
// the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// connect builds the pool and the inspector. It does not talk to Redis.
func (e *env) connect() error {
	if e.redisURL == "" {
		return usagef("no Redis: give --redis URL or set $%s", EnvRedisURL)
	}
	p, err := pool.New(pool.Config{
		URL:        e.redisURL,
		ClientName: "boundedctl",
		// A CLI sends one command at a time; the defaults are a service's.
		Request:    pool.LaneConfig{Size: 2},
		Background: pool.LaneConfig{Size: 1},
		Blocking:   pool.BlockingConfig{Size: 1},
		// One failed dial is enough to report Redis down.
		FailureThreshold: 1,
	})
	if err != nil {
		// pool.New's errors never quote the password (pool/redact.go).
		return fmt.Errorf("--redis %s: %w", redactURL(e.redisURL), err)
	}
	e.p = p
	in, err := queue.NewInspector(p, e.namespace)
	if err != nil {
		return fmt.Errorf("--namespace: %w", err)
	}
	e.in = in
	return nil
}

// redisURLFlag is the --redis flag. Its String, which a command's -h
// prints as the default (the URL given before the command or in
// $BOUNDED_REDIS_URL), shows the URL without its password.
type redisURLFlag struct{ p *string }

func (f redisURLFlag) String() string {
	if f.p == nil || *f.p == "" {
		return ""
	}
	return redactURL(*f.p)
}

func (f redisURLFlag) Set(s string) error { *f.p = s; return nil }

// redactURL is the URL as it may be printed: its password replaced, or,
// when it does not parse, only its scheme.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.Index(raw, "://"); i >= 0 && !strings.Contains(raw[:i], "@") {
			return raw[:i] + "://(unparsable URL not shown)"
		}
		return "(unparsable URL not shown)"
	}
	return u.Redacted()
}

// redisErr names the Redis that failed, without its password.
func (e *env) redisErr(err error) error {
	if err == nil {
		return nil
	}
	// The queue's answers (not Redis failures) need no address.
	for _, answer := range []error{queue.ErrInvalidArgument, queue.ErrJobFinished, queue.ErrLookupIncomplete, queue.ErrJobGone} {
		if errors.Is(err, answer) {
			return err
		}
	}
	if isNotFound(err) {
		return err
	}
	return fmt.Errorf("%w (redis %s)", err, redactURL(e.redisURL))
}

func (e *env) usage(w io.Writer) {
	fmt.Fprint(w, `boundedctl: see and operate the queues of bounded (github.com/bounded-go/bounded).

Usage: boundedctl [--redis URL] [--namespace NS] [--timeout D] COMMAND [flags] [args]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %-32s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, `
Read commands take --json. The Redis URL comes from --redis or $%s.
Exit codes: 0 ok, 1 error, 2 usage. 'boundedctl COMMAND -h' shows a command's flags.
`, EnvRedisURL)
}
