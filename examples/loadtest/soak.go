package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/hist"
	"github.com/bounded-go/bounded/internal/trend"
)

// soakConfig holds the soak's own flags.
type soakConfig struct {
	rate           int
	duration       time.Duration
	maxInflight    int
	interval       time.Duration // between two samples of /debug/bounded
	chart          string
	heapGrowth     float64 // fraction of the live heap per minute
	goroutineSlack int
	settle         time.Duration
	maxHeap        uint64 // 0: not checked
	maxRSS         uint64
	maxShed        float64 // fraction of the chats sent the service may shed (503 overloaded)
}

func runSoak(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg common
	cfg.register(fs)
	var sc soakConfig
	var maxHeap, maxRSS string
	fs.IntVar(&sc.rate, "rate", 1000, "chats per second")
	fs.DurationVar(&sc.duration, "duration", 10*time.Minute, "how long to send")
	fs.Float64Var(&sc.maxShed, "max-shed", 0, "pass with up to this `fraction` of the chats sent shed by the service (503 overloaded): on a shared machine a CPU stall makes every handler look busy, and shedding is then the service doing its job; any other failure still fails")
	fs.IntVar(&sc.maxInflight, "max-inflight", 64, "most requests in flight (the client's connections); when the service, or this machine, stalls, the rate falls behind and requests are counted late instead of piling up")
	fs.DurationVar(&sc.interval, "sample", time.Second, "how often to sample /debug/bounded")
	fs.StringVar(&sc.chart, "chart", "", "write an SVG chart to this `file`")
	fs.Float64Var(&sc.heapGrowth, "heap-growth", 0.01, "fail when the live heap's slope over the second half of the load exceeds this `fraction` of the heap per minute (0 turns the check off; runs under 2 minutes are too short for it)")
	fs.IntVar(&sc.goroutineSlack, "goroutine-slack", 5, "goroutines the service may have above its count before the load")
	fs.DurationVar(&sc.settle, "settle", 15*time.Second, "after the load, wait this long for the service's goroutines to come back to their count before it")
	fs.StringVar(&maxHeap, "max-heap", "", "fail when the live heap exceeds this `size` (e.g. 8MiB); empty: no bound")
	fs.StringVar(&maxRSS, "max-rss", "", "fail when the RSS exceeds this `size` (e.g. 40MiB); empty: no bound")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if err = cfg.check(); err == nil {
		switch {
		case sc.rate < 1 || sc.duration <= 0 || sc.maxInflight < 1 || sc.interval <= 0:
			err = errors.New("-rate and -max-inflight must be at least 1, -duration and -sample positive")
		case sc.heapGrowth < 0 || sc.goroutineSlack < 0 || sc.settle < 0:
			err = errors.New("-heap-growth, -goroutine-slack and -settle must not be negative")
		}
	}
	if err == nil {
		sc.maxHeap, err = parseSize(maxHeap)
	}
	if err == nil {
		sc.maxRSS, err = parseSize(maxRSS)
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest soak:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s := &soak{cfg: sc, common: cfg, load: newClient(cfg, sc.maxInflight), probe: newClient(cfg, 1), errs: newErrorKinds(10)}
	defer s.load.close()
	defer s.probe.close()
	if err := s.probe.waitHealthy(ctx, cfg.wait); err != nil {
		fmt.Fprintln(stderr, "loadtest soak:", err)
		return 1
	}
	res, err := s.run(ctx, stdout, newProgress(stderr))
	if err != nil {
		fmt.Fprintln(stderr, "loadtest soak:", err)
		return 1
	}
	checks := verdict(res)
	res.print(stdout, checks)
	if sc.chart != "" {
		if err := writeChart(sc.chart, res); err != nil {
			fmt.Fprintln(stderr, "loadtest soak: writing the chart:", err)
			return 1
		}
		fmt.Fprintln(stdout, "chart:", sc.chart)
	}
	return finish(stdout, !failed(checks))
}

// sample is one reading of /debug/bounded, with the client's counts at the
// time.
type sample struct {
	T          float64 // seconds since the load began
	Goroutines float64
	Conns      float64 // HTTP connections open at the service
	HeapLive   float64
	RSS        float64
	Waiting    float64    // callers waiting for a request- or background-lane connection
	Queued     [3]float64 // ready + delayed, by queue
	Sent       float64    // requests sent so far
	Accepted   float64    // 202s so far
	Limited    float64    // 429s so far
	Failed     float64    // everything else so far
}

func sampleOf(d chatapi.Debug, t float64) sample {
	s := sample{
		T:          t,
		Goroutines: float64(d.Process.Goroutines),
		Conns:      float64(d.HTTP.OpenConns),
		HeapLive:   float64(d.Process.HeapLive),
		RSS:        float64(d.Process.RSS),
		Waiting:    float64(d.Pool.Request.Waiting + d.Pool.Background.Waiting),
	}
	for i, name := range chatapi.Queues() {
		q := d.Queues[name]
		s.Queued[i] = float64(q.Ready + q.Delayed)
	}
	return s
}

// soak is one soak run.
type soak struct {
	cfg    soakConfig
	common common
	load   *client // the chats
	probe  *client // /debug/bounded, on its own connection

	sent, accepted, limited, failed, late atomic.Uint64
	shed                                  atomic.Uint64 // 503: shed by the service (also in failed's kinds)
	lat                                   hist.Histogram
	maxLat                                atomic.Int64
	errs                                  *errorKinds
}

// soakResult is what a soak measured.
type soakResult struct {
	cfg                                   soakConfig
	url                                   string
	samples                               []sample
	sampleErrors                          int
	loadEnd                               float64 // seconds
	sent, accepted, limited, failed, late uint64
	shed                                  uint64 // 503 overloaded, not counted in failed
	p50, p90, p99, maxLat                 time.Duration
	baseGoroutines, endGoroutines         int
	settled                               bool // goroutines came back within -settle
	drain                                 drain
	errs                                  *errorKinds
}

// run sends the load, samples the service, waits for the jobs and the
// goroutines to settle, and returns what it saw. Every goroutine it starts
// has returned when it returns.
func (s *soak) run(ctx context.Context, stdout io.Writer, prog *progress) (*soakResult, error) {
	d, err := s.probe.debug(ctx)
	if err != nil {
		return nil, err
	}
	before, err := countsOf(d)
	if err != nil {
		return nil, err
	}
	res := &soakResult{cfg: s.cfg, url: s.common.url, baseGoroutines: d.Process.Goroutines, errs: s.errs}
	fmt.Fprintf(stdout, "soak: %d chats/s for %s against %s (service goroutines before: %d)\n",
		s.cfg.rate, s.cfg.duration, s.common.url, res.baseGoroutines)

	start := time.Now()
	var loadDone atomic.Bool
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	var mu sync.Mutex // guards res.samples and res.sampleErrors while the sampler runs
	sampler.Go(func() {
		t := time.NewTicker(s.cfg.interval)
		defer t.Stop()
		var prev sample
		for {
			sctx, cancel := context.WithTimeout(ctx, s.cfg.interval)
			d, err := s.probe.debug(sctx)
			cancel()
			mu.Lock()
			if err != nil {
				res.sampleErrors++
			} else {
				sm := sampleOf(d, time.Since(start).Seconds())
				sm.Sent, sm.Accepted = float64(s.sent.Load()), float64(s.accepted.Load())
				sm.Limited, sm.Failed = float64(s.limited.Load()), float64(s.failed.Load())
				res.samples = append(res.samples, sm)
				prog.update(s.progressLine(sm, prev, loadDone.Load()))
				prev = sm
			}
			mu.Unlock()
			select {
			case <-stopSampling:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})

	s.send(ctx, start)
	res.loadEnd = time.Since(start).Seconds()
	loadDone.Store(true)
	s.load.close() // the service's connection goroutines end with these connections

	res.drain = s.probe.waitDrained(ctx, before, s.accepted.Load(), s.common.drainTimeout)
	res.endGoroutines, res.settled = s.settleGoroutines(ctx, res.baseGoroutines)

	close(stopSampling)
	sampler.Wait()
	prog.done()
	res.sent, res.accepted, res.limited, res.failed, res.late = s.sent.Load(), s.accepted.Load(), s.limited.Load(), s.failed.Load(), s.late.Load()
	res.shed = s.shed.Load()
	res.p50, res.p90, res.p99 = s.lat.Quantile(0.5), s.lat.Quantile(0.9), s.lat.Quantile(0.99)
	res.maxLat = time.Duration(s.maxLat.Load())
	if ctx.Err() != nil {
		return res, fmt.Errorf("interrupted after %.0fs", res.loadEnd)
	}
	return res, nil
}

// send sends chats at cfg.rate until cfg.duration has passed: chat k is due
// at start + k/rate, and maxInflight goroutines take the next due chat as
// soon as they are free. A chat sent more than 100ms after its due time is
// counted late (the service, or this machine, cannot keep up).
func (s *soak) send(ctx context.Context, start time.Time) {
	openLoop(ctx, start, float64(s.cfg.rate), s.cfg.duration, s.cfg.maxInflight, func() { s.late.Add(1) }, func(k int) { s.chat(ctx, k) })
}

func (s *soak) chat(ctx context.Context, k int) {
	s.sent.Add(1)
	t0 := time.Now()
	code, err := s.load.chat(ctx, k)
	d := time.Since(t0)
	s.lat.Observe(d)
	for {
		m := s.maxLat.Load()
		if int64(d) <= m || s.maxLat.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	switch {
	case err == nil && code == http.StatusAccepted:
		s.accepted.Add(1)
	case err == nil && code == http.StatusTooManyRequests:
		s.limited.Add(1)
	case ctx.Err() != nil:
		// interrupted: not the service's failure
	case code == http.StatusServiceUnavailable:
		s.shed.Add(1)
		s.errs.add(err)
	default:
		s.failed.Add(1)
		s.errs.add(err)
	}
}

// settleGoroutines waits, at most cfg.settle, until the service runs no more
// goroutines than base + slack, and returns the last count.
func (s *soak) settleGoroutines(ctx context.Context, base int) (int, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.settle)
	defer cancel()
	last := -1
	for {
		if d, err := s.probe.debug(ctx); err == nil {
			last = d.Process.Goroutines
			if last <= base+s.cfg.goroutineSlack {
				return last, true
			}
		}
		if pause(ctx, 100*time.Millisecond) != nil {
			return last, false
		}
	}
}

func (s *soak) progressLine(now, prev sample, loadDone bool) string {
	phase := fmt.Sprintf("soak %s/%s", (time.Duration(now.T) * time.Second).Round(time.Second), s.cfg.duration)
	if loadDone {
		phase = "soak: load done, waiting for the jobs"
	}
	rate := 0.0
	if dt := now.T - prev.T; dt > 0 && prev.T > 0 {
		rate = (now.Sent - prev.Sent) / dt
	}
	return fmt.Sprintf("%s  sent %.0f (%.0f/s, %d late)  202 %.0f  429 %.0f  failed %.0f  p99 %s | heap %s  rss %s  goroutines %.0f  waiting %.0f  queued %.0f",
		phase, now.Sent, rate, s.late.Load(), now.Accepted, now.Limited, now.Failed, ms(s.lat.Quantile(0.99)),
		fmtBytes(now.HeapLive), fmtBytes(now.RSS), now.Goroutines, now.Waiting, now.Queued[0]+now.Queued[1]+now.Queued[2])
}

// Check statuses.
const (
	statusPass = "PASS"
	statusFail = "FAIL"
	statusSkip = "SKIP"
)

// check is one line of the verdict.
type check struct {
	name, status, detail string
}

// finish prints the run's last line, PASS or FAIL, and returns the exit
// code that goes with it.
func finish(stdout io.Writer, ok bool) int {
	fmt.Fprintln(stdout, passIf(ok))
	if !ok {
		return 1
	}
	return 0
}

// failed reports whether any check failed.
func failed(checks []check) bool {
	for _, c := range checks {
		if c.status == statusFail {
			return true
		}
	}
	return false
}

func passIf(ok bool) string {
	if ok {
		return statusPass
	}
	return statusFail
}

// The slope checks fit a line to the second half of the load, when it holds
// at least minSlopeSamples samples and the load lasted minTrendSeconds.
const (
	minSlopeSamples = 10
	minTrendSeconds = 120
	// growthParts is how many parts the heap check splits the window into.
	growthParts = 5
)

// risingParts splits ys into k consecutive parts and counts how many of the
// k-1 steps from one part's median to the next go up by more than minStep.
func risingParts(ys []float64, k int, minStep float64) (rising, steps int) {
	if len(ys) < k {
		return 0, 0
	}
	prev := math.NaN()
	for i := range k {
		m := median(ys[i*len(ys)/k : (i+1)*len(ys)/k])
		if i > 0 {
			steps++
			if m-prev > minStep {
				rising++
			}
		}
		prev = m
	}
	return rising, steps
}

// verdict judges a soak.
func verdict(r *soakResult) []check {
	var cs []check
	shedOK := float64(r.shed) <= r.cfg.maxShed*float64(r.sent)
	cs = append(cs, check{"requests", passIf(r.failed == 0 && shedOK && r.accepted > 0),
		fmt.Sprintf("%d sent, %d accepted (202), %d limited (429), %d shed (503, -max-shed %g), %d failed otherwise, %d sent late",
			r.sent, r.accepted, r.limited, r.shed, r.cfg.maxShed, r.failed, r.late)})

	load := r.loadSamples()
	cs = append(cs, check{"samples", passIf(len(load) >= 2),
		fmt.Sprintf("%d samples of /debug/bounded during the load, %d failed", len(load), r.sampleErrors)})

	half := secondHalf(load, r.loadEnd)
	heap := check{name: "live heap slope"}
	switch {
	case r.cfg.heapGrowth == 0:
		heap.status, heap.detail = statusSkip, "-heap-growth 0"
	case len(half) < minSlopeSamples || r.loadEnd < minTrendSeconds:
		heap.status = statusSkip
		heap.detail = fmt.Sprintf("%d samples over %.0fs in the second half: too short to tell a trend from warm-up", len(half), r.loadEnd/2)
	default:
		// A slope over the limit fails only when it is sustained: the
		// median of each fifth of the window clearly above the one before,
		// at least three times in four. A step or two (connections opened during a
		// latency spike on a shared machine, a cache filling up) move the
		// slope of a window but not the level of most of its parts; a leak
		// raises every part.
		xs, ys := column(half, func(s sample) float64 { return s.T }), column(half, func(s sample) float64 { return s.HeapLive })
		slope, _, _ := theilSen(xs, ys)
		med := median(ys)
		perMin := slope * 60 / med
		// A part counts as rising when it is above the one before by at
		// least half of what the limit allows over a part.
		minStep := 0.5 * r.cfg.heapGrowth * med / 60 * (xs[len(xs)-1] - xs[0]) / growthParts
		rising, steps := risingParts(ys, growthParts, minStep)
		heap.status = passIf(perMin <= r.cfg.heapGrowth || 4*rising < 3*steps)
		heap.detail = fmt.Sprintf("%+.2f %%/min (%s/min) over the second half, median %s, rising in %d of %d parts; fails above %.2f %%/min rising in 3 of 4",
			100*perMin, fmtBytes(slope*60), fmtBytes(med), rising, steps, 100*r.cfg.heapGrowth)
	}
	cs = append(cs, heap)

	gr := check{name: "goroutines"}
	gr.detail = fmt.Sprintf("%d before the load, %d after it (slack %d)", r.baseGoroutines, r.endGoroutines, r.cfg.goroutineSlack)
	ok := r.settled && r.endGoroutines <= r.baseGoroutines+r.cfg.goroutineSlack
	// During the load the count moves with the requests in flight; over a
	// short run that noise is a trend as large as the slack.
	// So the trend is of the service's own goroutines, net of connections.
	if len(half) >= minSlopeSamples && r.loadEnd >= minTrendSeconds {
		xs := column(half, func(s sample) float64 { return s.T })
		slope, _, _ := theilSen(xs, column(half, sample.own))
		growth := slope * (xs[len(xs)-1] - xs[0])
		ok = ok && growth <= float64(r.cfg.goroutineSlack)
		gr.detail += fmt.Sprintf("; trend over the second half %+.1f (not counting connections)", growth)
	}
	gr.status = passIf(ok)
	cs = append(cs, gr)

	jobs := check{name: "jobs", detail: r.drain.String()}
	jobs.status = passIf(r.drain.ok(r.accepted))
	if !r.drain.checked {
		jobs.status = statusSkip
	}
	cs = append(cs, jobs)

	if r.cfg.maxHeap > 0 {
		m := maxOf(load, func(s sample) float64 { return s.HeapLive })
		cs = append(cs, check{"max live heap", passIf(m <= float64(r.cfg.maxHeap)), fmt.Sprintf("%s; bound %s", fmtBytes(m), fmtBytes(float64(r.cfg.maxHeap)))})
	}
	if r.cfg.maxRSS > 0 {
		m := maxOf(load, func(s sample) float64 { return s.RSS })
		cs = append(cs, check{"max RSS", passIf(m <= float64(r.cfg.maxRSS)), fmt.Sprintf("%s; bound %s", fmtBytes(m), fmtBytes(float64(r.cfg.maxRSS)))})
	}
	return cs
}

// own is the service's goroutines other than its connections' (net/http
// runs one per connection, and their number follows the client and the
// latency, not the service's health).
func (s sample) own() float64 { return s.Goroutines - s.Conns }

// loadSamples returns the samples taken while the load ran.
func (r *soakResult) loadSamples() []sample {
	i, _ := slices.BinarySearchFunc(r.samples, r.loadEnd, func(s sample, t float64) int {
		if s.T <= t {
			return -1
		}
		return 1
	})
	return r.samples[:i]
}

// secondHalf returns the samples of the second half of the load.
func secondHalf(load []sample, loadEnd float64) []sample {
	i := slices.IndexFunc(load, func(s sample) bool { return s.T >= loadEnd/2 })
	if i < 0 {
		return nil
	}
	return load[i:]
}

func column(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func maxOf(ss []sample, f func(sample) float64) float64 {
	m := 0.0
	for _, s := range ss {
		m = max(m, f(s))
	}
	return m
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// theilSen fits the Theil-Sen slope of ys over xs with memwatch's estimator
// (internal/trend). A soak of a day has too many pairs to take them all, so
// inputs longer than 600 points are thinned to 600 evenly spaced ones first.
func theilSen(xs, ys []float64) (slope, agreement float64, ok bool) {
	const maxPoints = 600
	if n := len(xs); n > maxPoints {
		tx, ty := make([]float64, maxPoints), make([]float64, maxPoints)
		for i := range maxPoints {
			j := i * (n - 1) / (maxPoints - 1)
			tx[i], ty[i] = xs[j], ys[j]
		}
		xs, ys = tx, ty
	}
	return trend.TheilSen(xs, ys, nil)
}

// print writes the summary table and the verdict.
func (r *soakResult) print(w io.Writer, checks []check) {
	load := r.loadSamples()
	achieved := 0.0
	if r.loadEnd > 0 {
		achieved = float64(r.sent) / r.loadEnd
	}
	fmt.Fprintf(w, "\nsoak: %.0fs of load at %d chats/s against %s (%.1f/s achieved), %d samples\n\n",
		r.loadEnd, r.cfg.rate, r.url, achieved, len(r.samples))
	fmt.Fprintf(w, "%-22s %10s %10s %10s %10s %12s\n", "", "start", "median", "max", "load end", "after drain")
	row := func(name string, f func(sample) float64, format func(float64) string) {
		if len(load) == 0 {
			return
		}
		vals := column(load, f)
		after := f(r.samples[len(r.samples)-1])
		fmt.Fprintf(w, "%-22s %10s %10s %10s %10s %12s\n", name, format(vals[0]), format(median(vals)),
			format(slices.Max(vals)), format(vals[len(vals)-1]), format(after))
	}
	mib := func(v float64) string { return fmt.Sprintf("%.2f", v/(1<<20)) }
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
	row("live heap (MiB)", func(s sample) float64 { return s.HeapLive }, mib)
	row("RSS (MiB)", func(s sample) float64 { return s.RSS }, mib)
	row("goroutines", func(s sample) float64 { return s.Goroutines }, num)
	row("  HTTP connections", func(s sample) float64 { return s.Conns }, num)
	row("  own (not conns)", sample.own, num)
	row("pool waiting", func(s sample) float64 { return s.Waiting }, num)
	for i, name := range chatapi.Queues() {
		row("queued "+name, func(s sample) float64 { return s.Queued[i] }, num)
	}
	fmt.Fprintf(w, "\nlatency (histogram, within 12.5 %%): p50 %s  p90 %s  p99 %s  max %s (exact)\n",
		ms(r.p50), ms(r.p90), ms(r.p99), ms(r.maxLat))
	if r.failed+r.shed > 0 {
		fmt.Fprintln(w, "failures:")
		r.errs.print(w)
	}
	fmt.Fprintln(w)
	for _, c := range checks {
		fmt.Fprintf(w, "%s  %-16s %s\n", c.status, c.name, c.detail)
	}
}

// parseSize parses "8MiB", "512KiB", "1GiB", "40MB" or a number of bytes.
// The empty string is 0.
func parseSize(in string) (uint64, error) {
	s := strings.TrimSpace(in)
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("bad size %q: want a number with an optional unit (KiB, MiB, GiB, KB, MB, GB)", in)
	}
	return uint64(v * mult), nil
}

// fmtBytes formats a byte count with a binary unit.
func fmtBytes(b float64) string {
	sign := ""
	if b < 0 {
		sign, b = "-", -b
	}
	i := 0
	for b >= 1024 && i < 3 {
		b /= 1024
		i++
	}
	return fmt.Sprintf("%s%.1f %s", sign, b, [...]string{"B", "KiB", "MiB", "GiB"}[i])
}
