package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/internal/gcra"
)

// Limit is a fleet-wide limit on a queue's jobs, enforced by the take
// script in Redis, so it holds across every process consuming the queue.
// The zero value limits nothing. See docs/queue.md, "Concurrency and rate
// limits".
//
// The limit is configured per worker (WorkerConfig.Limit) and travels with
// every take: processes that disagree each admit by their own limit, so
// while a new limit rolls out the most permissive concurrency limit in the
// fleet holds, and each distinct rate admits its own jobs (the rates add
// up: each keeps its own state).
// A process with no limit takes without looking at it: every consumer of
// a limited queue must be given the limit.
type Limit struct {
	// Concurrency is how many of the queue's jobs may be in flight at
	// once across every process: taken by a consumer and not yet acked,
	// retried, dead-lettered or put back. Zero: no concurrency limit. A
	// slot held by a process that dies is given back by the sweep of its
	// consumer, HeartbeatTTL + HeartbeatInterval after it died at most
	// (see ConsumerConfig.HeartbeatInterval). At most 1,000,000.
	Concurrency int
	// Rate and Per limit how many of the queue's jobs may start per Per
	// across every process, by the generic cell rate algorithm (the
	// ratelimit package's): Rate jobs per Per, evenly spaced, with Burst
	// at once after an idle spell. A job the rate forbids stays in the
	// ready list (no attempt is spent) and the consumer sleeps on one
	// timer to the instant the next one is allowed. Zero Rate: no rate
	// limit. Per is at least 1µs and a whole number of µs; Burst defaults
	// to Rate.
	Rate  int
	Per   time.Duration
	Burst int
	// PartitionConcurrency is how many jobs of one partition (the
	// Partition option) may be in flight at once across every process:
	// a partition at its limit is skipped by the take, and the others
	// keep flowing. Zero: no per-partition limit. At most 1,000,000.
	PartitionConcurrency int
	// PartitionRate and PartitionPer limit how many jobs of one partition
	// may start per PartitionPer across every process, by the generic
	// cell rate algorithm: PartitionRate jobs per PartitionPer, evenly
	// spaced, with PartitionBurst at once after an idle spell. A job its
	// partition's rate forbids waits in its partition (no attempt is
	// spent), the other partitions keep flowing, and a consumer with
	// nothing else to take sleeps on one timer to the instant the first
	// held partition may run again (or until a ring). Zero PartitionRate:
	// no rate per partition. PartitionPer is at least 1µs and a whole
	// number of µs; the interval between two jobs of a partition is
	// counted in whole µs, rounded up (so a rate whose interval is not a
	// whole number of µs admits less than asked, by less than 1µs per
	// job). PartitionBurst defaults to PartitionRate.
	PartitionRate  int
	PartitionPer   time.Duration
	PartitionBurst int
}

// maxLimitConcurrency bounds Limit.Concurrency: its slots are members of
// one sorted set.
const maxLimitConcurrency = 1_000_000

// limiting reports whether l limits anything.
func (l Limit) limiting() bool {
	return l.Concurrency > 0 || l.Rate > 0 || l.PartitionConcurrency > 0 || l.PartitionRate > 0
}

// withDefaults fills and checks l, as field (its name in the config).
func (l Limit) withDefaults(e *check.Errors, field string) Limit {
	if l.Concurrency < 0 || l.Concurrency > maxLimitConcurrency {
		e.Addf("%s.Concurrency must be in 0..%d, got %d", field, maxLimitConcurrency, l.Concurrency)
	}
	if l.PartitionConcurrency < 0 || l.PartitionConcurrency > maxLimitConcurrency {
		e.Addf("%s.PartitionConcurrency must be in 0..%d, got %d", field, maxLimitConcurrency, l.PartitionConcurrency)
	}
	l.Burst = checkRate(e, field, "", "", l.Rate, l.Per, l.Burst, func(burst int) (int64, bool) {
		_, step, _, ok := gcra.Units(int64(l.Rate), l.Per.Microseconds(), int64(burst))
		return step, ok
	})
	l.PartitionBurst = checkRate(e, field, "Partition", " of a partition", l.PartitionRate, l.PartitionPer, l.PartitionBurst, func(burst int) (int64, bool) {
		step := partStep(l)
		return step, step <= gcra.MaxUnits/int64(burst)
	})
	return l
}

// checkRate checks one rate of a Limit (prefix "" for Rate/Per/Burst,
// "Partition" for PartitionRate/PartitionPer/PartitionBurst; of names the
// jobs it counts in messages) and returns its burst, defaulted to the
// rate. units answers the interval between two jobs in µs and whether
// the (defaulted) burst times it fits gcra.MaxUnits.
func checkRate(e *check.Errors, field, prefix, of string, rate int, per time.Duration, burst int, units func(burst int) (int64, bool)) int {
	switch {
	case rate < 0:
		e.Addf("%s.%sRate must not be negative, got %d", field, prefix, rate)
	case rate == 0 && (per != 0 || burst != 0):
		e.Addf("%s.%sPer and %sBurst need a %sRate, got %sRate 0, %sPer %s, %sBurst %d",
			field, prefix, prefix, prefix, prefix, prefix, per, prefix, burst)
	case rate > 0:
		if burst == 0 {
			burst = rate
		}
		if per < time.Microsecond || per%time.Microsecond != 0 {
			e.Addf("%s.%sPer must be a whole number of µs, at least 1µs, got %s", field, prefix, per)
		} else if burst < 1 {
			e.Addf("%s.%sBurst must be at least 1, got %d", field, prefix, burst)
		} else if step, ok := units(burst); !ok {
			e.Addf("%s.%sBurst (%d) times the interval between two jobs%s (%dµs) exceeds %dµs", field, prefix, burst, of, step, int64(gcra.MaxUnits))
		}
	}
	return burst
}

// partStep is the interval between two jobs of one partition under l's
// PartitionRate, in whole µs rounded up.
func partStep(l Limit) int64 {
	return (l.PartitionPer.Microseconds()-1)/int64(l.PartitionRate) + 1
}

// limiter is a worker's view of its queue's limit: the arguments every
// take sends.
type limiter struct {
	conc, pconc            int
	scale, step, burst     int64
	pstep, pburst          int64  // the partitions' rate: interval µs (0: none), burst
	prate                  string // key: the partitions' rate states (limitPartRateOf)
	held, rate             string // keys
	pheld                  string // key: partition -> its slots held
	prefix                 string // this incarnation's slots: consumer ID, NUL, token, NUL
	now                    func() time.Time
	minRange, maxRange     string // ZREMRANGEBYLEX bounds of this incarnation's slots
	consumerLo, consumerHi string // ZRANGEBYLEX bounds of every incarnation of this consumer ID
	waiting                string // key: the consumers waiting for a slot (limitWaiting)

	// waits: the last take was stopped by the concurrency limit, so this
	// consumer is recorded as waiting for a slot (the fetcher's only). It
	// starts true: an entry of this incarnation that no take of this
	// worker wrote (a previous worker of the same Consumer on this queue
	// whose drain release failed) is removed by the first take, at the
	// cost of one ZREM once; left there, releases below its score would
	// ring the doorbell for nobody.
	waits bool
	// rerang is the count of slots held when the last take, stopped by
	// the limit, rang the doorbell again for a consumer with a wider limit
	// (limitTakeLua); "" when it did not. The next take does not ring again
	// at the same count: that ring came back to this consumer. So a ring
	// costs this consumer at most two takes, never a loop.
	rerang string
}

// The keys of a queue's limits, beside keys.go's.
func (k keys) limitHeld() string { return k.tag + ":limit:held" }
func (k keys) limitRate() string { return k.tag + ":limit:rate" }

// limitRateOf is the GCRA state of one rate limit (its units): processes
// whose limits disagree (a new limit rolling out) keep apart states, so
// each admits by its own limit, and one limit's state is never further
// ahead than its Burst intervals unless Redis's clock went back.
func (k keys) limitRateOf(scale, step, burst int64) string {
	return k.limitRate() + ":" + strconv.FormatInt(scale, 10) + ":" + strconv.FormatInt(step, 10) + ":" + strconv.FormatInt(burst, 10)
}
func (k keys) limitPart() string { return k.tag + ":limit:parts" }

// limitWaiting is the sorted set of the consumers that wait for a slot of
// the concurrency limit: member a consumer incarnation's slot prefix,
// score its limit. A take the limit stopped adds its consumer, the
// consumer's next take removes it, and so do its drain and the sweep of a
// dead consumer. A release that leaves fewer slots held than the lowest
// score rings the doorbell (limitReleaseLua): processes that disagree on
// the limit would otherwise miss the release of one with a wider limit.
func (k keys) limitWaiting() string { return k.tag + ":limit:waiting" }

// limitPartRateOf is the sorted set of the partitions' rate states under
// one per-partition rate (partition -> TAT µs), apart per limit as
// limitRateOf's.
func (k keys) limitPartRateOf(step, burst int64) string {
	return k.tag + ":limit:prate:" + strconv.FormatInt(step, 10) + ":" + strconv.FormatInt(burst, 10)
}

// slotPrefix is the start of the members of one consumer incarnation's
// slots. A slot is <consumer ID> NUL <token> NUL <list> NUL <element>:
// <list> is the job's partition when a per-partition limit counts it,
// else "". The sweep of a dead consumer
// removes its incarnation's range in one command, whatever it held.
func slotPrefix(consumer, token string) string { return consumer + "\x00" + token + "\x00" }

// lexRange returns the ZRANGEBYLEX bounds of the members starting with
// prefix, which ends with NUL.
func lexRange(prefix string) (lo, hi string) {
	return "[" + prefix, "(" + prefix[:len(prefix)-1] + "\x01"
}

// newLimiter returns w's limiter, or nil when its queue is not limited.
// The consumer's incarnation token is known once Start joined.
func newLimiter(w *Worker, token string) *limiter {
	l := w.cfg.Limit
	if !l.limiting() {
		return nil
	}
	lim := &limiter{conc: l.Concurrency, pconc: l.PartitionConcurrency, held: w.q.k.limitHeld(), rate: w.q.k.limitRate(), pheld: w.q.k.limitPart(), waiting: w.q.k.limitWaiting(), now: w.limitNow, waits: true}
	if l.Rate > 0 {
		lim.scale, lim.step, _, _ = gcra.Units(int64(l.Rate), l.Per.Microseconds(), int64(l.Burst))
		lim.burst = int64(l.Burst)
		lim.rate = w.q.k.limitRateOf(lim.scale, lim.step, lim.burst)
	}
	lim.prate = w.q.k.limitPartRateOf(0, 0)
	if l.PartitionRate > 0 {
		lim.pstep, lim.pburst = partStep(l), int64(l.PartitionBurst)
		lim.prate = w.q.k.limitPartRateOf(lim.pstep, lim.pburst)
	}
	p := slotPrefix(w.c.ID(), token)
	lim.prefix = p
	lim.minRange, lim.maxRange = lexRange(p)
	lim.consumerLo, lim.consumerHi = lexRange(w.c.ID() + "\x00")
	return lim
}

// takeLimited is the take of a limited queue (limitTakeScript, its
// allow-oom twin at maxmemory, as Worker.take). wait is how long until the
// rate allows the next job, when the rate stopped the take; part says it
// is the partitions' rates (a ring may come before). ks are the take's keys
// up to the level lists; the waiting set and the partition waiters follow
// them.
func (w *Worker) takeLimited(ctx context.Context, c redis.Scripter, ks []string, n int) (elems []string, wait time.Duration, part bool, err error) {
	lim := w.lim
	now := ""
	if lim.now != nil {
		now = strconv.FormatInt(lim.now().UnixMicro(), 10)
	}
	ks = append(ks, lim.waiting, w.q.k.partWaiters())
	args := []any{n, lim.prefix, lim.conc, now, lim.scale, lim.step, lim.burst, lim.pconc, lim.pstep, lim.pburst, boolArg(lim.waits), lim.rerang, w.q.k.roomChannel()}
	var reply []string
	if !w.mem.atLimit.Load() || w.q.cfg.Now().Sub(time.Unix(0, w.mem.oomAt.Load())) >= atLimitProbe {
		reply, err = limitTakeScript.Run(ctx, c, ks, args...).StringSlice()
		if !isOOM(err) {
			if err == nil {
				w.setAtLimit(false)
			}
			return lim.splitTake(reply, err)
		}
		w.setAtLimit(true)
	}
	reply, err = limitTakeAtLimitScript.Run(ctx, c, ks, args...).StringSlice()
	elems, wait, part, err = lim.splitTake(reply, err)
	w.mem.fetched.Add(uint64(len(elems)))
	return elems, wait, part, err
}

// splitTake splits limitTakeScript's reply, and notes whether the take
// recorded its consumer as waiting for a slot (a wait of "c"). A take that
// failed leaves that as it was: it may or may not have run.
func (lim *limiter) splitTake(reply []string, err error) ([]string, time.Duration, bool, error) {
	if err != nil {
		if !errors.As(err, new(redis.Error)) {
			lim.waits = true // no reply: it may have run either way, and the next take says
		}
		return nil, 0, false, err
	}
	if len(reply) == 0 {
		return nil, 0, false, errors.New("queue: the limited take script replied nothing")
	}
	held, waits := strings.CutPrefix(reply[0], "c")
	lim.waits = waits
	lim.rerang = ""
	if waits {
		lim.rerang = held // "c<held>": it rang again for a wider limit, at this count
		return reply[1:], 0, false, nil
	}
	w, part := strings.CutPrefix(reply[0], "p")
	us, perr := strconv.ParseInt(w, 10, 64)
	if perr != nil {
		return nil, 0, false, fmt.Errorf("queue: the limited take script replied %q for its wait", reply[0])
	}
	return reply[1:], time.Duration(us) * time.Microsecond, part, nil
}

// queueRelease adds to pipe the release of the slots of ops: one script
// call per pipeline of outcomes (per releaseChunk of them: the drain's last
// pipeline may carry more than maxAckBatch), however many it carries. It
// adds nothing without a concurrency limit, or for wake markers only.
func (w *Worker) queueRelease(ctx context.Context, pipe redis.Pipeliner, ops []ackOp) []redis.Cmder {
	if !w.lim.counts() {
		return nil
	}
	var cmds []redis.Cmder
	args := []any{"elems", w.lim.conc, w.lim.pconc, w.lim.prefix}
	for i, op := range ops {
		if holdsSlot(op) {
			args = append(args, op.elem)
		}
		if len(args) == 4+releaseChunk || (i == len(ops)-1 && len(args) > 4) {
			cmds = append(cmds, limitReleaseScript.EvalSha(ctx, pipe, w.releaseKeys(), args...))
			args = []any{"elems", w.lim.conc, w.lim.pconc, w.lim.prefix}
		}
	}
	return cmds
}

// counts reports whether l counts slots: a concurrency limit, of the
// queue or of its partitions (a rate alone counts none).
func (l *limiter) counts() bool { return l != nil && (l.conc > 0 || l.pconc > 0) }

// releaseKeys are the KEYS of limitReleaseScript.
func (w *Worker) releaseKeys() []string {
	k := w.q.k
	return append(k.withLevels(append([]string{k.limitHeld(), k.ready, k.bell, k.limitPart()}, k.partKeys()...)...), k.limitWaiting())
}

// releaseChunk bounds the slots one release call gives back (Lua's unpack
// has a limit).
const releaseChunk = 1000

// releaseFailed returns the error of the first release in cmds that
// failed, or nil.
func releaseFailed(cmds []redis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}

// holdsSlot reports whether op's element holds a slot of a concurrency
// limit: every job does, a wake marker does not.
func holdsSlot(op ackOp) bool { return op.elem != wakeMarker }

// releaseMine gives back every slot this incarnation holds: the drain runs
// it once its processing list is back in the ready list.
func (w *Worker) releaseMine(ctx context.Context) error {
	if !w.lim.counts() {
		return nil
	}
	return limitReleaseScript.Run(ctx, w.q.p.Background(), w.releaseKeys(), "range", w.lim.conc, w.lim.pconc, w.lim.minRange, w.lim.maxRange).Err()
}

// releaseDead gives back every slot a dead consumer's incarnation held:
// its sweep runs it before it moves the consumer's jobs back. It runs
// whether or not this worker has a limit (another process's may), at the
// cost of one command per sweep.
func (w *Worker) releaseDead(ctx context.Context, consumer, token string) error {
	if token == "" {
		return nil // a consumer of an earlier version, which held no slots
	}
	lo, hi := lexRange(slotPrefix(consumer, token))
	n, err := limitReleaseScript.Run(ctx, w.q.p.Background(), w.releaseKeys(), "range", 0, 0, lo, hi).Int()
	if n > 0 {
		w.log.Info("queue: gave back the limit slots of a dead consumer", "dead_consumer", consumer, "count", n)
	}
	return err
}

// releaseStale gives back the slots of this consumer ID that it does not
// hold: those of a previous incarnation (a restart under a stable
// ConsumerID), and this incarnation's whose element it no longer tracks
// (a reconcile just put it back). It runs on the fetcher's goroutine after
// a reconcile, so no take races it, and an element tracked when read is
// released by its outcome.
//
// A worker whose limit counts no slots (none, or a rate only) holds none,
// but its previous life may have (the limit changed in the restart): no
// sweep gives those back, since the consumer is alive under a token the
// queue records, so its first reconcile (previousLife) does, at the cost
// of one ZRANGEBYLEX per start.
func (w *Worker) releaseStale(ctx context.Context, previousLife bool) error {
	if !w.lim.counts() && !previousLife {
		return nil
	}
	lo, hi := lexRange(w.c.ID() + "\x00")
	prefix := slotPrefix(w.c.ID(), w.node.token)
	c := w.q.p.Background()
	pipe := c.Pipeline()
	heldCmd := pipe.ZRangeByLex(ctx, w.q.k.limitHeld(), &redis.ZRangeBy{Min: lo, Max: hi})
	var waitCmd *redis.StringSliceCmd
	if previousLife {
		// A previous life waiting for a slot is not waited for any more:
		// read with the slots, in the same round trip.
		waitCmd = pipe.ZRange(ctx, w.q.k.limitWaiting(), 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	members := heldCmd.Val()
	if waitCmd != nil {
		var gone []any
		for _, m := range waitCmd.Val() {
			if strings.HasPrefix(m, w.c.ID()+"\x00") && m != prefix {
				gone = append(gone, m)
			}
		}
		if len(gone) > 0 {
			if err := c.ZRem(ctx, w.q.k.limitWaiting(), gone...).Err(); err != nil {
				return err
			}
		}
	}
	var stale []any
	for _, m := range members {
		rest, mine := strings.CutPrefix(m, prefix)
		_, elem, _ := strings.Cut(rest, "\x00") // after the partition
		if !mine || !w.tracked(elem) {
			stale = append(stale, m)
		}
	}
	for len(stale) > 0 {
		part := stale[:min(len(stale), releaseChunk)]
		stale = stale[len(part):]
		var conc, pconc int
		if w.lim != nil {
			conc, pconc = w.lim.conc, w.lim.pconc
		}
		args := append([]any{"members", conc, pconc}, part...)
		if err := limitReleaseScript.Run(ctx, c, w.releaseKeys(), args...).Err(); err != nil {
			return err
		}
	}
	return nil
}

// LimitInFlight returns how many of the queue's jobs hold a slot of its
// concurrency limit now, across every process (the size of the set of
// slots, which a take, an outcome, a put-back and a sweep keep exact).
func (q *Queue) LimitInFlight(ctx context.Context) (int64, error) {
	n, err := q.p.Client().ZCard(ctx, q.k.limitHeld()).Result()
	if err != nil {
		return 0, q.errorf("LimitInFlight: %w", err)
	}
	return n, nil
}

// waitPartRate is the fetcher's wait when the partitions' rates stopped
// its take (nothing else could be taken): one timer to the instant the
// first partition held may run again, or the next ring (a job of another
// partition, a slot released), whichever comes first. Should the fetcher
// stop meanwhile, it rings the doorbell again (handOnRing). It reports
// false when ctx ended.
func (f *fetcher) waitPartRate(d time.Duration) bool {
	w := f.w
	w.hub.watch(f.ctx, w)
	w.st.fetchState.Store(fetcherWaitingForPartRate)
	w.rateWaiting.Store(true)
	defer w.rateWaiting.Store(false)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.wakeCh:
		return true
	case <-f.ctx.Done():
		return false
	}
}

// waitRate is the fetcher's wait when the queue's rate limit stopped its
// take: one timer to the instant the rate allows the next job (no ring
// can make it come sooner, so rings are not watched). Should the fetcher
// stop meanwhile, it rings the doorbell again (handOnRing), so another
// consumer takes the jobs at that instant. It reports false when ctx
// ended.
func (f *fetcher) waitRate(d time.Duration) bool {
	w := f.w
	w.st.fetchState.Store(fetcherWaitingForRate)
	w.rateWaiting.Store(true)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		w.rateWaiting.Store(false)
		return true
	case <-f.ctx.Done():
		return false
	}
}
