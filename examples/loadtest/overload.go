package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/hist"
)

// overloadConfig holds the overload mode's own flags.
type overloadConfig struct {
	multiple      float64
	duration      time.Duration
	measure       time.Duration
	measureConns  int
	capacity      float64 // chats/s; 0: measure it
	reference     time.Duration
	referenceLoad float64
	maxInflight   int
	interval      time.Duration
	redisURL      string
	latencyFactor float64
	memorySlack   uint64
	maxBacklog    int64
	minOffered    float64 // fraction of the offered rate the run must achieve
}

func runOverload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest overload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg common
	cfg.register(fs)
	var oc overloadConfig
	var slack string
	fs.Float64Var(&oc.multiple, "multiple", 5, "offer this `multiple` of the measured capacity")
	fs.DurationVar(&oc.duration, "duration", 60*time.Second, "how long to offer it")
	fs.DurationVar(&oc.measure, "measure", 10*time.Second, "how long to measure the capacity (a closed loop of -measure-conns; the first third is warm-up)")
	fs.IntVar(&oc.measureConns, "measure-conns", 64, "connections of the capacity measurement")
	fs.Float64Var(&oc.capacity, "capacity", 0, "the service's capacity in chats/s, instead of measuring it")
	fs.DurationVar(&oc.reference, "reference", 10*time.Second, "how long to measure the unloaded enqueue-to-start latency")
	fs.Float64Var(&oc.referenceLoad, "reference-load", 0.5, "load of the reference phase, as a `fraction` of the capacity")
	fs.IntVar(&oc.maxInflight, "max-inflight", 256, "most requests in flight during the overload")
	fs.DurationVar(&oc.interval, "sample", time.Second, "how often to sample /debug/bounded and Redis during the overload")
	fs.StringVar(&oc.redisURL, "redis", "", "the service's Redis `URL`, to check that its used_memory stays flat; empty: not checked")
	fs.Float64Var(&oc.latencyFactor, "latency-factor", 2, "fail when the overload's enqueue-to-start p99 exceeds this `factor` of the reference's")
	fs.StringVar(&slack, "memory-slack", "4MiB", "fail when Redis's used_memory grows more than this `size` over the second half of the overload (the first half is for what has a TTL, like replies, to reach its level)")
	fs.Int64Var(&oc.maxBacklog, "max-backlog", 0, "fail when a queue's backlog exceeds this; 0: the MaxLen the service reports")
	fs.Float64Var(&oc.minOffered, "min-offered", 0.8, "fail when less than this `fraction` of the offered rate could be sent (the verdict would not be about overload)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	err := cfg.check()
	if err == nil && (oc.multiple <= 1 || oc.duration <= 0 || oc.measure <= 0 || oc.measureConns < 1 || oc.capacity < 0 ||
		oc.reference <= 0 || oc.referenceLoad <= 0 || oc.referenceLoad >= 1 || oc.maxInflight < 1 || oc.interval <= 0 ||
		oc.latencyFactor <= 0 || oc.maxBacklog < 0 || oc.minOffered < 0 || oc.minOffered > 1) {
		err = errors.New("-multiple must be over 1, -reference-load in (0, 1), -min-offered in [0, 1], durations, counts and -latency-factor positive")
	}
	if err == nil {
		oc.memorySlack, err = parseSize(slack)
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest overload:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	o := &overload{cfg: oc, common: cfg, load: newClient(cfg, max(oc.maxInflight, oc.measureConns)), probe: newClient(cfg, 1),
		errs: newErrorKinds(10), out: stdout, prog: newProgress(stderr)}
	defer o.load.close()
	defer o.probe.close()
	if oc.redisURL != "" {
		opts, err := redis.ParseURL(oc.redisURL)
		if err != nil {
			fmt.Fprintln(stderr, "loadtest overload: -redis:", err)
			return 2
		}
		o.rdb = redis.NewClient(opts)
		defer o.rdb.Close()
	}
	if err := o.probe.waitHealthy(ctx, cfg.wait); err != nil {
		fmt.Fprintln(stderr, "loadtest overload:", err)
		return 1
	}
	res, err := o.run(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest overload:", err)
		return 1
	}
	checks := overloadVerdict(res)
	res.print(stdout, checks)
	return finish(stdout, !failed(checks))
}

// overload is one overload run.
type overload struct {
	cfg    overloadConfig
	common common
	load   *client
	probe  *client
	rdb    *redis.Client // nil: Redis is not checked
	errs   *errorKinds
	out    io.Writer
	prog   *progress
}

// outcomes counts the answers of one phase.
type outcomes struct {
	sent, accepted, shed, shedNoRetryAfter, limited, timeouts, failed, late atomic.Uint64
	lat                                                                     hist.Histogram // of the 202s
}

// overloadResult is what an overload run measured.
type overloadResult struct {
	cfg         overloadConfig
	url         string
	timeout     time.Duration // of one request
	capacity    float64       // chats/s
	measured    bool          // capacity measured, not given
	refRate     float64       // offered in the reference phase, chats/s
	offered     float64       // offered in the overload, chats/s
	achieved    float64       // sent in the overload, chats/s
	loadSeconds float64

	refWait, overWait   time.Duration // enqueue-to-start p99
	refWaitN, overWaitN uint64        // chats it is of
	refHTTP, overHTTP   time.Duration // p99 of the 202s' round trips

	// Of the overload phase.
	sent, accepted, shed, shedNoRetryAfter, limited, timeouts, failed, late uint64

	limits       [chatapi.NumQueues]int64 // each queue's backlog bound; 0: none
	limitSource  string
	maxBacklog   [chatapi.NumQueues]int64 // sampled ready + delayed
	samples      int
	sampleErrors int
	shedding     bool // the service reported shedding enabled

	memChecked                       bool
	memStart, memMid, memEnd, memMax uint64 // used_memory; memMid: the first sample of the second half
	memErr                           error

	totalAccepted uint64
	drain         drain
	errs          *errorKinds
}

// run measures the capacity and the reference latency, offers the overload,
// and waits for the jobs. Every goroutine it starts has returned when it
// returns.
func (o *overload) run(ctx context.Context) (*overloadResult, error) {
	res := &overloadResult{cfg: o.cfg, url: o.common.url, timeout: o.common.timeout, errs: o.errs}
	d, err := o.probe.debug(ctx)
	if err != nil {
		return nil, err
	}
	before, err := countsOf(d)
	if err != nil {
		return nil, err
	}
	res.shedding = d.Shed.Enabled
	res.limits, res.limitSource = limitsOf(d, o.cfg.maxBacklog)
	var total uint64

	// 1. Capacity: the chat workers' drain rate under a closed loop that
	// keeps them busy.
	res.capacity = o.cfg.capacity
	if res.capacity == 0 {
		fmt.Fprintf(o.out, "overload: measuring the capacity: a closed loop of %d connections for %s\n", o.cfg.measureConns, o.cfg.measure)
		var oc outcomes
		res.capacity, err = o.measureCapacity(ctx, &oc)
		total += oc.accepted.Load()
		if err != nil {
			return nil, err
		}
		res.measured = true
		if res.capacity <= 0 {
			return nil, errors.New("measured a capacity of 0 chats/s: no chat was processed")
		}
		if err := o.waitEmpty(ctx); err != nil {
			return nil, fmt.Errorf("after measuring the capacity: %w", err)
		}
	}

	// 2. Reference: the enqueue-to-start latency at a fraction of it.
	res.refRate = o.cfg.referenceLoad * res.capacity
	fmt.Fprintf(o.out, "overload: capacity %.0f chats/s; reference: %.0f chats/s for %s\n", res.capacity, res.refRate, o.cfg.reference)
	w0, err := o.chatWait(ctx)
	if err != nil {
		return nil, err
	}
	var ref outcomes
	o.openLoop(ctx, res.refRate, o.cfg.reference, &ref)
	total += ref.accepted.Load()
	if err := o.waitEmpty(ctx); err != nil {
		return nil, fmt.Errorf("after the reference: %w", err)
	}
	w1, err := o.chatWait(ctx)
	if err != nil {
		return nil, err
	}
	refWait := w1.Sub(w0)
	res.refWait, res.refWaitN, res.refHTTP = refWait.Quantile(0.99), refWait.Count(), ref.lat.Quantile(0.99)

	// 3. The overload, with the backlog and Redis sampled.
	res.offered = o.cfg.multiple * res.capacity
	fmt.Fprintf(o.out, "overload: offering %.0f chats/s (%gx) for %s\n", res.offered, o.cfg.multiple, o.cfg.duration)
	if o.rdb != nil {
		res.memChecked = true
		res.memStart, res.memErr = usedMemory(ctx, o.rdb)
		res.memMax = res.memStart
	}
	var over outcomes
	start := time.Now()
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() { o.sample(ctx, res, &over, start, stopSampling) })
	o.openLoop(ctx, res.offered, o.cfg.duration, &over)
	res.loadSeconds = time.Since(start).Seconds()
	close(stopSampling)
	sampler.Wait()
	o.prog.done()
	if o.rdb != nil && res.memErr == nil {
		res.memEnd, res.memErr = usedMemory(ctx, o.rdb)
		res.memMax = max(res.memMax, res.memEnd)
	}
	// The chats started during the load: their waits are the overload's.
	w2, err := o.chatWait(ctx)
	if err != nil {
		return nil, err
	}
	overWait := w2.Sub(w1)
	res.overWait, res.overWaitN, res.overHTTP = overWait.Quantile(0.99), overWait.Count(), over.lat.Quantile(0.99)
	res.sent, res.accepted, res.shed, res.shedNoRetryAfter = over.sent.Load(), over.accepted.Load(), over.shed.Load(), over.shedNoRetryAfter.Load()
	res.limited, res.timeouts, res.failed, res.late = over.limited.Load(), over.timeouts.Load(), over.failed.Load(), over.late.Load()
	res.achieved = float64(res.sent) / res.loadSeconds
	total += res.accepted
	res.totalAccepted = total

	o.load.close()
	res.drain = o.probe.waitDrained(ctx, before, total, o.common.drainTimeout)
	if ctx.Err() != nil {
		return res, fmt.Errorf("interrupted")
	}
	return res, nil
}

// limitsOf returns the backlog bound of each queue: max (when set) for every
// queue, else the MaxLen the service reports.
func limitsOf(d chatapi.Debug, max int64) ([chatapi.NumQueues]int64, string) {
	var l [chatapi.NumQueues]int64
	if max > 0 {
		for i := range l {
			l[i] = max
		}
		return l, "-max-backlog"
	}
	if d.Shed.Enabled {
		return d.Shed.MaxLen, "the service's MaxLen"
	}
	return l, "none: the service does not shed and -max-backlog is 0"
}

// measureCapacity runs a closed loop for cfg.measure and returns the chats
// the service's chat workers processed per second over its last two
// thirds (the first is warm-up: connections, caches, the backlog building).
func (o *overload) measureCapacity(ctx context.Context, oc *outcomes) (float64, error) {
	lctx, cancel := context.WithTimeout(ctx, o.cfg.measure)
	defer cancel()
	var d0 chatapi.Debug
	var t0 time.Time
	var derr error
	var warm sync.WaitGroup
	warm.Go(func() {
		if pause(lctx, o.cfg.measure/3) == nil {
			d0, derr = o.probe.debug(ctx)
			t0 = time.Now()
		}
	})
	var next atomic.Int64
	var wg sync.WaitGroup
	for range o.cfg.measureConns {
		wg.Go(func() {
			for lctx.Err() == nil {
				o.chat(lctx, ctx, int(next.Add(1)-1), oc)
			}
		})
	}
	wg.Wait()
	warm.Wait()
	if derr != nil || t0.IsZero() {
		return 0, errors.Join(derr, ctx.Err(), errors.New("no reading after the warm-up"))
	}
	d1, err := o.probe.debug(ctx)
	if err != nil {
		return 0, err
	}
	dt := time.Since(t0).Seconds()
	c0, err0 := countsOf(d0)
	c1, err1 := countsOf(d1)
	if err := errors.Join(err0, err1); err != nil {
		return 0, err
	}
	return float64(c1.processed[0]-c0.processed[0]) / dt, nil
}

// openLoop sends chats at rate for d: chat k is due at start + k/rate, and
// cfg.maxInflight goroutines take the next due chat as soon as they are
// free; one sent more than 100ms late is counted late.
func (o *overload) openLoop(ctx context.Context, rate float64, d time.Duration, oc *outcomes) {
	openLoop(ctx, time.Now(), rate, d, o.cfg.maxInflight, func() { oc.late.Add(1) }, func(k int) { o.chat(ctx, ctx, k, oc) })
}

// chat sends one chat on ctx and counts its outcome; a failure after run
// (the whole run's context) ended is not counted.
func (o *overload) chat(ctx, run context.Context, k int, oc *outcomes) {
	oc.sent.Add(1)
	t0 := time.Now()
	code, hdr, err := o.load.post(ctx, k)
	lat := time.Since(t0)
	switch {
	case err == nil && code == http.StatusAccepted:
		oc.accepted.Add(1)
		oc.lat.Observe(lat)
	case code == http.StatusServiceUnavailable:
		oc.shed.Add(1)
		if !validRetryAfter(hdr.Get("Retry-After")) {
			oc.shedNoRetryAfter.Add(1)
		}
	case err == nil && code == http.StatusTooManyRequests:
		oc.limited.Add(1)
	case ctx.Err() != nil || run.Err() != nil:
		oc.sent.Add(^uint64(0)) // the phase ended under it: not an outcome
	case isTimeout(err):
		oc.timeouts.Add(1)
		o.errs.add(errors.New("timeout"))
	default:
		oc.failed.Add(1)
		o.errs.add(err)
	}
}

// validRetryAfter reports whether v is a Retry-After a client can use
// (RFC 9110 10.2.3): a non-negative integer of seconds, or an HTTP-date.
func validRetryAfter(v string) bool {
	if _, err := strconv.ParseUint(v, 10, 63); err == nil {
		return true
	}
	_, err := http.ParseTime(v)
	return err == nil
}

// isTimeout reports whether err is the client giving up on an answer.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// sample reads the backlog and Redis's memory every cfg.interval until stop.
func (o *overload) sample(ctx context.Context, res *overloadResult, oc *outcomes, start time.Time, stop <-chan struct{}) {
	t := time.NewTicker(o.cfg.interval)
	defer t.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, o.cfg.interval)
		d, err := o.probe.debug(sctx)
		if err == nil {
			if _, err = countsOf(d); err == nil {
				res.samples++
				for i, name := range chatapi.Queues() {
					q := d.Queues[name]
					res.maxBacklog[i] = max(res.maxBacklog[i], q.Ready+q.Delayed)
				}
			}
		}
		if err != nil {
			res.sampleErrors++
		}
		if o.rdb != nil && res.memErr == nil {
			var m uint64
			if m, res.memErr = usedMemory(sctx, o.rdb); res.memErr == nil {
				res.memMax = max(res.memMax, m)
				if res.memMid == 0 && time.Since(start) >= o.cfg.duration/2 {
					res.memMid = m
				}
			}
		}
		cancel()
		el := time.Since(start).Seconds()
		o.prog.update(fmt.Sprintf("overload %.0fs/%s  sent %d (%.0f/s)  202 %d  503 %d  timeouts %d  failed %d  backlog %v  redis %s",
			el, o.cfg.duration, oc.sent.Load(), float64(oc.sent.Load())/max(el, 0.001), oc.accepted.Load(), oc.shed.Load(),
			oc.timeouts.Load(), oc.failed.Load(), res.maxBacklog, fmtBytes(float64(res.memMax))))
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// chatWait reads the service's enqueue-to-start histogram.
func (o *overload) chatWait(ctx context.Context) (chatapi.WaitHistogram, error) {
	d, err := o.probe.debug(ctx)
	if err != nil {
		return chatapi.WaitHistogram{}, err
	}
	if len(d.ChatWait.Counts) == 0 {
		return d.ChatWait, fmt.Errorf("%s reports no chat_wait: a service without enqueue-to-start latencies", chatapi.PathDebug)
	}
	return d.ChatWait, nil
}

// waitEmpty waits, at most the drain timeout (a minute when it is 0), until
// every queue is empty.
func (o *overload) waitEmpty(ctx context.Context) error {
	timeout := o.common.drainTimeout
	if timeout == 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last jobCounts
	for {
		d, err := o.probe.debug(ctx)
		if err == nil {
			if last, err = countsOf(d); err == nil && last.waiting == [chatapi.NumQueues]int64{} {
				return nil
			}
		}
		if pause(ctx, 50*time.Millisecond) != nil {
			return fmt.Errorf("the queues did not empty within %s (still %v)", timeout, last.waiting)
		}
	}
}

// usedMemory returns used_memory from INFO memory.
func usedMemory(ctx context.Context, rdb *redis.Client) (uint64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return parseUsedMemory(info)
}

// parseUsedMemory reads used_memory from the text of INFO memory.
func parseUsedMemory(info string) (uint64, error) {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseUint(v, 10, 64)
		}
	}
	return 0, errors.New("INFO memory has no used_memory")
}

// overloadVerdict judges an overload run.
func overloadVerdict(r *overloadResult) []check {
	var cs []check
	how := "given (-capacity)"
	if r.measured {
		how = fmt.Sprintf("the chat workers' drain under a closed loop of %d connections, the last 2/3 of %s", r.cfg.measureConns, r.cfg.measure)
	}
	cs = append(cs, check{"capacity", passIf(r.capacity > 0), fmt.Sprintf("%.0f chats/s, %s", r.capacity, how)})

	cs = append(cs, check{"offered", passIf(r.offered > 0 && r.achieved >= r.cfg.minOffered*r.offered),
		fmt.Sprintf("%.0f chats/s sent of %.0f offered (%.1fx capacity; %d sent over 100ms late); fails under %.0f %%",
			r.achieved, r.offered, r.achieved/max(r.capacity, 1e-9), r.late, 100*r.cfg.minOffered)})

	bl := check{name: "backlog"}
	bounded := r.limits != [chatapi.NumQueues]int64{}
	ok := bounded && r.samples > 0
	for i := range r.limits {
		if r.limits[i] > 0 && r.maxBacklog[i] > r.limits[i] {
			ok = false
		}
	}
	bl.status = passIf(ok)
	bl.detail = fmt.Sprintf("max %v sampled every %s (%d samples, %d failed); limits %v (%s)",
		r.maxBacklog, r.cfg.interval, r.samples, r.sampleErrors, r.limits, r.limitSource)
	cs = append(cs, bl)

	bound := time.Duration(r.cfg.latencyFactor * float64(r.refWait))
	cs = append(cs, check{"latency", passIf(r.refWaitN > 0 && r.overWaitN > 0 && r.overWait <= bound),
		fmt.Sprintf("enqueue-to-start p99 %s under overload (%d chats) vs %s unloaded (%d chats); bound %gx = %s",
			ms(r.overWait), r.overWaitN, ms(r.refWait), r.refWaitN, r.cfg.latencyFactor, ms(bound))})

	cs = append(cs, check{"shed", passIf(r.shed > 0 && r.shedNoRetryAfter == 0),
		fmt.Sprintf("%d answered 503 (%d without Retry-After), %d accepted, %d limited (429)", r.shed, r.shedNoRetryAfter, r.accepted, r.limited)})

	cs = append(cs, check{"no timeouts", passIf(r.timeouts == 0 && r.failed == 0),
		fmt.Sprintf("%d timed out (-timeout %s), %d failed otherwise", r.timeouts, r.timeout, r.failed)})

	mem := check{name: "redis memory"}
	switch {
	case !r.memChecked:
		mem.status, mem.detail = statusSkip, "no -redis"
	case r.memErr != nil:
		mem.status, mem.detail = statusFail, "reading INFO memory: "+r.memErr.Error()
	case r.memMid == 0:
		mem.status, mem.detail = statusFail, "no sample of used_memory in the second half of the overload"
	default:
		// Flat: not growing over the second half. Over the first, what the
		// service keeps for a TTL (replies) rises to its level.
		growth := int64(r.memEnd) - int64(r.memMid)
		mem.status = passIf(growth <= int64(r.cfg.memorySlack))
		mem.detail = fmt.Sprintf("used_memory %s at the start, %s at half time, %s at the end (%+s over the second half), max %s; slack %s",
			fmtBytes(float64(r.memStart)), fmtBytes(float64(r.memMid)), fmtBytes(float64(r.memEnd)),
			fmtBytes(float64(growth)), fmtBytes(float64(r.memMax)), fmtBytes(float64(r.cfg.memorySlack)))
	}
	cs = append(cs, mem)

	jobs := check{name: "jobs", detail: r.drain.String()}
	jobs.status = passIf(r.drain.ok(r.totalAccepted))
	if !r.drain.checked {
		jobs.status = statusSkip
	}
	cs = append(cs, jobs)
	return cs
}

// print writes the figures and the verdict.
func (r *overloadResult) print(w io.Writer, checks []check) {
	fmt.Fprintf(w, "\noverload: %.0fs at %.0f chats/s offered (%gx a capacity of %.0f/s) against %s; shedding %s\n",
		r.loadSeconds, r.offered, r.cfg.multiple, r.capacity, r.url, map[bool]string{true: "on", false: "off"}[r.shedding])
	fmt.Fprintf(w, "  reference   %.0f chats/s for %s: enqueue-to-start p99 %s; POST p99 %s\n", r.refRate, r.cfg.reference, ms(r.refWait), ms(r.refHTTP))
	fmt.Fprintf(w, "  overload    enqueue-to-start p99 %s; POST p99 (202s) %s\n", ms(r.overWait), ms(r.overHTTP))
	fmt.Fprintf(w, "  answers     202: %d   503: %d   429: %d   timeouts: %d   failed: %d\n", r.accepted, r.shed, r.limited, r.timeouts, r.failed)
	if r.failed+r.timeouts > 0 {
		fmt.Fprintln(w, "  failures:")
		r.errs.print(w)
	}
	fmt.Fprintln(w)
	for _, c := range checks {
		fmt.Fprintf(w, "%s  %-16s %s\n", c.status, c.name, c.detail)
	}
}
