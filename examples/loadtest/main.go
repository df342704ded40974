// Command loadtest drives examples/chatservice the way the post-mortem
// verified its fix (ab -n 10000 -c 100, then a 24-hour soak):
//
//	cd examples   # its own Go module
//	go run ./loadtest burst -n 10000 -c 100
//	go run ./loadtest soak -rate 1000 -duration 10m -chart soak.svg
//	go run ./loadtest overload -multiple 5 -duration 60s -redis redis://127.0.0.1:6380
//
// burst sends N chats at concurrency C and prints the success count,
// throughput and latency percentiles. soak sends chats at a fixed rate for a
// duration while it samples /debug/bounded every second; it prints a summary
// table, writes a self-contained SVG chart, and exits 1 when the live heap
// grows steadily, goroutines grow, a request failed for a reason other than
// 429, or a job was not processed. Both print a progress line while they run
// and check at the end that every accepted chat, and its follow-ups, was
// processed.
//
// overload measures the service's capacity (the chat workers' drain rate
// under a closed-loop load), its unloaded enqueue-to-start latency (at half
// of it), then offers a multiple of it for a duration, and checks that the
// backlog stayed under the service's limit, accepted chats kept their
// enqueue-to-start p99 within a factor of the unloaded one, the excess got
// 503s with Retry-After rather than timeouts, and Redis's used_memory stayed
// flat (with -redis).
//
// Users are drawn round-robin from -users names, so the service's per-user
// limit is not hit unless it is configured to be.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/backoff"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  loadtest burst [flags]   N requests at concurrency C (like ab -n N -c C)
  loadtest soak [flags]    a fixed rate for a duration, with /debug/bounded sampled every second
  loadtest overload [flags]  measure capacity, then offer a multiple of it: is the excess shed?

Run "loadtest <mode> -h" for the flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "burst":
		return runBurst(args[1:], stdout, stderr)
	case "soak":
		return runSoak(args[1:], stdout, stderr)
	case "overload":
		return runOverload(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "loadtest: unknown mode %q\n%s", args[0], usage)
	return 2
}

// common holds the flags both modes take.
type common struct {
	url          string
	users        int
	messageBytes int
	timeout      time.Duration
	wait         time.Duration
	drainTimeout time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "the service's base `URL`")
	fs.IntVar(&c.users, "users", 1000, "distinct users, taken round-robin")
	fs.IntVar(&c.messageBytes, "message-bytes", 100, "size of each chat message")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "timeout of one request")
	fs.DurationVar(&c.wait, "wait", 30*time.Second, "wait this long for /healthz to answer 200 before starting")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", time.Minute, "after the load, wait this long for every job to be processed (0 skips the check)")
}

func (c *common) check() error {
	if c.users < 1 || c.messageBytes < 1 || c.timeout <= 0 || c.wait < 0 || c.drainTimeout < 0 {
		return errors.New("-users and -message-bytes must be at least 1, -timeout positive, -wait and -drain-timeout not negative")
	}
	return nil
}

// client talks to the service.
type client struct {
	base    string
	http    *http.Client
	users   int
	message string
	agents  [3]string
}

// newClient returns a client that keeps up to conns connections open.
func newClient(cfg common, conns int) *client {
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		// Connections opened during a latency spike close soon after it,
		// so the service's per-connection goroutines and buffers come back
		// down instead of ratcheting up (which a soak would read as growth).
		IdleConnTimeout:    5 * time.Second,
		DisableCompression: true,
	}
	return &client{
		base:    strings.TrimRight(cfg.url, "/"),
		http:    &http.Client{Transport: tr, Timeout: cfg.timeout},
		users:   cfg.users,
		message: strings.Repeat("m", cfg.messageBytes),
		agents:  [3]string{"assistant", "coder", "translator"},
	}
}

func (c *client) close() { c.http.CloseIdleConnections() }

// chat posts the i-th chat and returns the status code; for an answer other
// than 202 or 429 it also returns an error saying what came back.
func (c *client) chat(ctx context.Context, i int) (int, error) {
	code, _, err := c.post(ctx, i)
	return code, err
}

// post is chat with the answer's headers (nil when there was no answer).
func (c *client) post(ctx context.Context, i int) (int, http.Header, error) {
	body, _ := json.Marshal(chatapi.ChatRequest{
		User:    "user-" + strconv.Itoa(i%c.users),
		Agent:   c.agents[i%len(c.agents)],
		Message: c.message,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+chatapi.PathChat, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusTooManyRequests {
		_, err = io.Copy(io.Discard, resp.Body) // so the connection is reused
		return resp.StatusCode, resp.Header, err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, resp.Header, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
}

// debug fetches /debug/bounded.
func (c *client) debug(ctx context.Context) (chatapi.Debug, error) {
	var d chatapi.Debug
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+chatapi.PathDebug, nil)
	if err != nil {
		return d, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return d, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return d, fmt.Errorf("GET %s: HTTP %d: %s", chatapi.PathDebug, resp.StatusCode, bytes.TrimSpace(b))
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return d, fmt.Errorf("GET %s: %w", chatapi.PathDebug, err)
	}
	return d, nil
}

// waitHealthy waits until /healthz answers 200, at most d.
func (c *client) waitHealthy(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+chatapi.PathHealth, nil)
		resp, err := c.http.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
		} else {
			last = err.Error()
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("%s did not become healthy within %s (last: %s)", c.base+chatapi.PathHealth, d, last)
		}
	}
}

// pause waits d or until ctx ends, and then says why.
func pause(ctx context.Context, d time.Duration) error {
	if !backoff.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// openLoop sends chat k (by calling send) at start + k/rate for every k
// whose due time is before start + d: an open loop, whose offered load does
// not drop when the service slows down. inflight goroutines take the next
// due chat as soon as they are free; a chat sent more than 100ms after its
// due time is reported to late (the service, or this machine, cannot keep
// up). It returns when every chat was sent or ctx ended.
func openLoop(ctx context.Context, start time.Time, rate float64, d time.Duration, inflight int, late func(), send func(k int)) {
	var next atomic.Int64
	end := start.Add(d)
	perChat := float64(time.Second) / rate
	var wg sync.WaitGroup
	for range inflight {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				due := start.Add(time.Duration(float64(k) * perChat))
				if !due.Before(end) {
					return
				}
				if wait := time.Until(due); wait > 0 {
					if !backoff.Sleep(ctx, wait) {
						return
					}
				} else if wait < -100*time.Millisecond {
					late()
				}
				send(int(k))
			}
		})
	}
	wg.Wait()
}

// jobCounts are the service's queue counters at one moment.
type jobCounts struct {
	processed [3]uint64 // this process's workers, by queue in chatapi.Queues() order
	dead      [3]uint64 // jobs this process's workers sent to the dead letters
	waiting   [3]int64  // ready + delayed + in flight, in Redis
}

// countsOf extracts the queue counters from d, failing when a queue is
// missing or its stats could not be read (a check on zeros would pass).
func countsOf(d chatapi.Debug) (jobCounts, error) {
	var c jobCounts
	for i, name := range chatapi.Queues() {
		q, ok := d.Queues[name]
		switch {
		case !ok:
			return c, fmt.Errorf("/debug/bounded has no queue %q", name)
		case q.Error != "":
			return c, fmt.Errorf("queue %s: %s", name, q.Error)
		case q.Local == nil:
			return c, fmt.Errorf("queue %s has no worker in this process", name)
		}
		c.processed[i] = q.Local.Processed
		c.dead[i] = q.Local.Dead
		c.waiting[i] = q.Ready + q.Delayed + q.InFlight
	}
	return c, nil
}

// drain is what became of the jobs of a run.
type drain struct {
	checked   bool // false when -drain-timeout is 0
	settled   bool // every queue empty and every accepted chat accounted for
	took      time.Duration
	processed [3]uint64 // by queue, during the run
	dead      [3]uint64
	waiting   [3]int64 // at the end
	err       error    // reading /debug/bounded failed at the end
}

// ok reports whether every accepted chat and its two follow-ups were
// processed.
func (d drain) ok(accepted uint64) bool {
	return d.settled && d.processed[0] >= accepted && d.processed[1] >= d.processed[0] &&
		d.processed[2] >= d.processed[0] && d.dead == [3]uint64{}
}

func (d drain) String() string {
	if !d.checked {
		return "not checked (-drain-timeout 0)"
	}
	s := fmt.Sprintf("chat +%d, embeddings +%d, webhooks +%d processed; dead +%d/+%d/+%d; still queued %d/%d/%d",
		d.processed[0], d.processed[1], d.processed[2], d.dead[0], d.dead[1], d.dead[2], d.waiting[0], d.waiting[1], d.waiting[2])
	if d.settled {
		s += fmt.Sprintf("; settled %s after the load", d.took.Round(time.Millisecond))
	} else {
		s += fmt.Sprintf("; NOT settled after %s", d.took.Round(time.Millisecond))
	}
	if d.err != nil {
		s += fmt.Sprintf(" (%v)", d.err)
	}
	return s
}

// waitDrained waits, at most timeout, until the queues are empty and the jobs
// of the accepted chats (and their follow-ups) are processed or dead.
func (c *client) waitDrained(ctx context.Context, before jobCounts, accepted uint64, timeout time.Duration) drain {
	res := drain{checked: timeout > 0}
	if !res.checked {
		return res
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d, err := c.debug(ctx)
		var now jobCounts
		if err == nil {
			now, err = countsOf(d)
		}
		res.err = err
		if err == nil {
			for i := range now.processed {
				res.processed[i] = now.processed[i] - before.processed[i]
				res.dead[i] = now.dead[i] - before.dead[i]
				res.waiting[i] = now.waiting[i]
			}
			// Chats that died produce no follow-ups.
			res.settled = res.waiting == [3]int64{} && res.processed[0]+res.dead[0] >= accepted &&
				res.processed[1]+res.dead[1] >= res.processed[0] && res.processed[2]+res.dead[2] >= res.processed[0]
		}
		res.took = time.Since(start)
		if res.settled || pause(ctx, 100*time.Millisecond) != nil {
			return res
		}
	}
}

// errorKinds counts failures by message, keeping at most max distinct ones.
type errorKinds struct {
	mu     sync.Mutex
	max    int
	counts map[string]int
	other  int
}

func newErrorKinds(max int) *errorKinds { return &errorKinds{max: max, counts: make(map[string]int)} }

func (e *errorKinds) add(err error) {
	msg := err.Error()
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.counts[msg]; ok || len(e.counts) < e.max {
		e.counts[msg]++
		return
	}
	e.other++
}

func (e *errorKinds) print(w io.Writer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for msg, n := range e.counts {
		fmt.Fprintf(w, "  %6d x %s\n", n, msg)
	}
	if e.other > 0 {
		fmt.Fprintf(w, "  %6d x (other errors)\n", e.other)
	}
}

// progress writes a status line: redrawn in place on a terminal, every
// tenth call elsewhere (CI logs).
type progress struct {
	w     io.Writer
	tty   bool
	calls int
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(line string) {
	p.calls++
	switch {
	case p.tty:
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
	case p.calls%10 == 1:
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
}
