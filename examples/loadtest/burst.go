package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

func runBurst(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest burst", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg common
	cfg.register(fs)
	n := fs.Int("n", 10000, "requests to send")
	c := fs.Int("c", 100, "requests in flight at once")
	ok429 := fs.Bool("ok-429", false, "count 429 as success (when the service's limit is configured to trigger)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cfg.check(); err != nil || *n < 1 || *c < 1 {
		fmt.Fprintln(stderr, "loadtest burst: -n and -c must be at least 1;", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cl := newClient(cfg, *c)
	defer cl.close()
	if err := cl.waitHealthy(ctx, cfg.wait); err != nil {
		fmt.Fprintln(stderr, "loadtest burst:", err)
		return 1
	}
	var before jobCounts
	if cfg.drainTimeout > 0 {
		d, err := cl.debug(ctx)
		if err == nil {
			before, err = countsOf(d)
		}
		if err != nil {
			fmt.Fprintln(stderr, "loadtest burst: reading the job counters:", err)
			return 1
		}
	}

	fmt.Fprintf(stdout, "burst: %d requests at concurrency %d against %s\n", *n, *c, cfg.url)
	prog := newProgress(stderr)
	res := burst(ctx, cl, *n, *c, func(done, failed int, elapsed time.Duration) {
		prog.update(fmt.Sprintf("burst %d/%d sent, %d failed, %s", done, *n, failed, elapsed.Round(100*time.Millisecond)))
	})
	prog.done()
	dr := cl.waitDrained(ctx, before, uint64(res.accepted), cfg.drainTimeout)

	ok := res.print(stdout, *ok429)
	fmt.Fprintf(stdout, "  jobs        %s\n", dr)
	if dr.checked && !dr.ok(uint64(res.accepted)) {
		ok = false
	}
	return finish(stdout, ok)
}

// burstResult is the outcome of a burst.
type burstResult struct {
	n                         int
	accepted, limited, failed int
	lat                       []time.Duration // of every request, in no order
	elapsed                   time.Duration
	errs                      *errorKinds
}

// burst sends n chats from c goroutines, each sending its next one as soon
// as the previous is answered (ab's model). onProgress is called about five
// times a second from one goroutine. Every goroutine it starts has returned
// when it returns.
func burst(ctx context.Context, cl *client, n, c int, onProgress func(done, failed int, elapsed time.Duration)) burstResult {
	res := burstResult{n: n, errs: newErrorKinds(10)}
	codes := make([]int, n)         // 0: not sent, -1: no answer, else the status
	lat := make([]time.Duration, n) // written by index, so without a lock
	var next, done, failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				code, err := cl.chat(ctx, i)
				lat[i] = time.Since(t0)
				codes[i] = code
				if err != nil {
					failed.Add(1)
					if code == 0 {
						codes[i] = -1 // no answer at all
					}
					res.errs.add(err)
				}
				done.Add(1)
			}
		})
	}
	finished := make(chan struct{})
	var reporter sync.WaitGroup
	reporter.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-finished:
				onProgress(int(done.Load()), int(failed.Load()), time.Since(start))
				return
			case <-t.C:
				onProgress(int(done.Load()), int(failed.Load()), time.Since(start))
			}
		}
	})
	wg.Wait()
	res.elapsed = time.Since(start)
	close(finished)
	reporter.Wait()

	res.lat = make([]time.Duration, 0, done.Load())
	for i, code := range codes {
		switch code {
		case 0:
			continue // not sent: interrupted
		case http.StatusAccepted:
			res.accepted++
		case http.StatusTooManyRequests:
			res.limited++
		default:
			res.failed++
		}
		res.lat = append(res.lat, lat[i])
	}
	return res
}

// print writes the result and reports whether it counts as a success.
func (r burstResult) print(w io.Writer, ok429 bool) bool {
	answered := r.accepted + r.limited + r.failed
	success := r.accepted
	note := "429 counted as failure; -ok-429 when the limit is meant to trigger"
	if ok429 {
		success += r.limited
		note = "429 counted as success (-ok-429)"
	}
	pct := 0.0
	if r.n > 0 {
		pct = 100 * float64(success) / float64(r.n)
	}
	fmt.Fprintf(w, "  answers     202: %d   429: %d   failed: %d   not sent: %d\n", r.accepted, r.limited, r.failed, r.n-answered)
	fmt.Fprintf(w, "  success     %d of %d (%.2f %%; %s)\n", success, r.n, pct, note)
	fmt.Fprintf(w, "  elapsed     %s   throughput %.0f requests/s\n", r.elapsed.Round(time.Millisecond), float64(answered)/r.elapsed.Seconds())
	l := summarize(r.lat)
	fmt.Fprintf(w, "  latency     p50 %s   p90 %s   p99 %s   max %s   mean %s\n", ms(l.p50), ms(l.p90), ms(l.p99), ms(l.max), ms(l.mean))
	if r.failed > 0 {
		fmt.Fprintln(w, "  failures:")
		r.errs.print(w)
	}
	return success == r.n
}

// latencies summarizes a set of durations.
type latencies struct {
	n                        int
	p50, p90, p99, max, mean time.Duration
}

// summarize computes exact percentiles (nearest rank) of lat, which it
// sorts.
func summarize(lat []time.Duration) latencies {
	if len(lat) == 0 {
		return latencies{}
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return latencies{
		n:    len(lat),
		p50:  percentile(lat, 0.50),
		p90:  percentile(lat, 0.90),
		p99:  percentile(lat, 0.99),
		max:  lat[len(lat)-1],
		mean: sum / time.Duration(len(lat)),
	}
}

// percentile returns the q-quantile (0 < q <= 1) of sorted by the nearest-rank
// method: the smallest value with at least q of the values at or below it.
// It returns 0 for an empty slice.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// ms formats d in milliseconds with two decimals.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}
