package queue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"github.com/bounded-go/bounded/internal/check"
)

// Periodic jobs (cron) without a leader. Every process may register the
// same schedule with Queue.Schedule; each occurrence is a delayed job with
// the deterministic ID cron:<name>:<due unix ms>, written through the
// idempotent enqueue, so it exists once whatever the number of processes,
// and the one delayed-job scheduler of the queue's workers promotes it: no
// timer per schedule. When a worker takes an occurrence it enqueues the
// next one (again idempotently) before running the handler.
//
// The registry is one hash per queue, {tag}:cron, with two fields per
// schedule:
//
//	m:<name>  "version|hash|next|prev|prevRun": the deploy version of the
//	          definition, its hash, the due ms of the occurrence that owns
//	          the chain (next), the last one taken (prev) and whether it ran
//	d:<name>  the definition (JSON: spec, payload, options)
//
// An occurrence whose due time is neither next nor prev of its schedule's
// current definition is stale (the schedule was changed or removed) and is
// acked without running and without a successor.

// DefaultMaxSchedules is Config.MaxSchedules's default.
const DefaultMaxSchedules = 1000

// minEvery is the shortest Every interval.
const minEvery = time.Second

// maxMissedScan bounds the missed occurrences counted after a downtime.
const maxMissedScan = 100_000

// cronLateGrace: an occurrence taken at most this late after the next one
// was due still runs, and so does the next one; only older ones count as
// missed (MaxCatchUp). It absorbs clock skew between the process that
// promotes an occurrence and the one that takes it, and late takes.
const cronLateGrace = 10 * time.Second

// cronPrefix starts the ID of every occurrence of a schedule; the ID option
// refuses it.
const cronPrefix = "cron:"

// ErrTooManySchedules: Schedule would register more than
// Config.MaxSchedules schedules on the queue.
var ErrTooManySchedules = errors.New("queue: too many schedules")

// ErrScheduleSuperseded: Schedule found the schedule registered, with
// another definition, by a newer deploy (a higher version); the newer one
// stands. It is safe to ignore.
var ErrScheduleSuperseded = errors.New("queue: schedule superseded by a newer deploy")

// ErrBadSchedule: Schedule got a spec it cannot parse.
var ErrBadSchedule = errors.New("queue: bad schedule")

// ScheduleOption changes one schedule.
type ScheduleOption func(*scheduleDef) error

// NoOverlap skips an occurrence while the previous run of the schedule is
// still running (or waiting to retry), in whichever process. The run holds
// a marker in Redis until its outcome; should its process die, the marker
// expires after the job's timeout (Timeout, else WorkerConfig.JobTimeout,
// else one hour) plus HeartbeatTTL and HeartbeatInterval (plus the retry
// delay while a failed run waits to retry).
func NoOverlap() ScheduleOption {
	return func(d *scheduleDef) error { d.NoOverlap = true; return nil }
}

// MaxCatchUp sets how many of the occurrences missed during a downtime (no
// worker took them at their time) run when workers are back: the latest n
// of them, one after the other; the older ones are skipped. 0 runs none
// (the schedule resumes at its next occurrence). Default 1: the latest
// missed occurrence runs once. Occurrences due within the last 10s are not
// missed (clock skew between processes, late takes): they all run.
func MaxCatchUp(n int) ScheduleOption {
	return func(d *scheduleDef) error {
		if n < 0 || n > 1000 {
			return fmt.Errorf("MaxCatchUp(%d): must be between 0 and 1000", n)
		}
		d.MaxCatchUp = n
		return nil
	}
}

// InLocation evaluates the spec in loc's time zone (a spec starting with
// CRON_TZ= or TZ= names its own). The default is UTC, so that processes on
// hosts in different zones agree on every occurrence. loc must be loadable
// by name (time.LoadLocation) in every process.
func InLocation(loc *time.Location) ScheduleOption {
	return func(d *scheduleDef) error {
		if loc == nil {
			return errors.New("InLocation(nil)")
		}
		if _, err := time.LoadLocation(loc.String()); err != nil {
			return fmt.Errorf("InLocation(%s): %w", loc, err)
		}
		d.Zone = loc.String()
		return nil
	}
}

// Version sets the deploy version of the definition (default: the
// registration time in unix ms). Of two different definitions of a
// schedule, the one with the higher version stands (equal versions: the
// higher hash of the definition, whatever the order); give a build number
// so that an old build restarting during a rolling deploy cannot win.
func Version(v int64) ScheduleOption {
	return func(d *scheduleDef) error {
		if v < 0 {
			return fmt.Errorf("Version(%d): must not be negative", v)
		}
		d.version = v
		return nil
	}
}

// JobTimeout and JobMaxAttempts: the Timeout and MaxAttempts options of
// every occurrence.
func JobTimeout(d time.Duration) ScheduleOption {
	return func(s *scheduleDef) error {
		var o enqueueOpts
		if err := Timeout(d)(&o); err != nil {
			return err
		}
		s.Timeout = d
		return nil
	}
}

// JobMaxAttempts is the MaxAttempts option of every occurrence.
func JobMaxAttempts(n int) ScheduleOption {
	return func(s *scheduleDef) error {
		var o enqueueOpts
		if err := MaxAttempts(n)(&o); err != nil {
			return err
		}
		s.MaxAttempts = n
		return nil
	}
}

// JobHeaders is the Headers option of every occurrence (see Header for
// the rules). h is read when JobHeaders is called.
func JobHeaders(h map[string]string) ScheduleOption {
	hs, err := collectHeaders(h)
	if err == nil {
		_, err = encodeHeaders(hs) // the bound on their bytes
	}
	return func(s *scheduleDef) error {
		if err != nil {
			return err
		}
		s.Headers = make(map[string]string, len(hs))
		for _, e := range hs {
			s.Headers[e.k] = e.v
		}
		return nil
	}
}

// Every returns the spec of a schedule every d (at least one second, whole
// milliseconds): occurrences at the multiples of d since the Unix epoch, so
// every process computes the same ones.
func Every(d time.Duration) string { return "@every " + d.String() }

// scheduleDef is a schedule's definition, as stored in the registry.
type scheduleDef struct {
	Spec        string        `json:"spec"`
	Zone        string        `json:"zone,omitempty"`
	Payload     []byte        `json:"payload"`
	NoOverlap   bool          `json:"no_overlap,omitempty"`
	MaxCatchUp  int           `json:"max_catch_up"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	MaxAttempts int           `json:"max_attempts,omitempty"`

	Headers map[string]string `json:"headers,omitempty"` // JobHeaders
	Type    string            `json:"type,omitempty"`    // JobType (typed.go)
	// Priority is JobPriority's level (levels.go); 0 is left out, so the
	// definitions registered before it keep their hash.
	Priority int `json:"priority,omitempty"`
	// Partition is JobPartition's key (parts.go); "" is left out, as
	// Priority 0.
	Partition string `json:"partition,omitempty"`

	version int64
}

// hash identifies the definition: a change of any field is a new one.
func (d scheduleDef) hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// occurrences computes a schedule's due times.
type occurrences interface{ Next(time.Time) time.Time }

// every is Every(d): multiples of d since the epoch.
type every time.Duration

func (e every) Next(t time.Time) time.Time {
	d := time.Duration(e).Milliseconds()
	ms := t.UnixMilli()
	return time.UnixMilli((ms/d + 1) * d).UTC()
}

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parse returns the occurrences of d.
func (d scheduleDef) parse() (occurrences, error) {
	if rest, ok := strings.CutPrefix(d.Spec, "@every "); ok {
		e, err := time.ParseDuration(rest)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrBadSchedule, d.Spec, err)
		}
		if e < minEvery || e%time.Millisecond != 0 {
			return nil, fmt.Errorf("%w %q: the interval must be at least %s, in whole milliseconds", ErrBadSchedule, d.Spec, minEvery)
		}
		return every(e), nil
	}
	spec := d.Spec
	if !strings.HasPrefix(spec, "TZ=") && !strings.HasPrefix(spec, "CRON_TZ=") {
		zone := d.Zone
		if zone == "" {
			zone = "UTC"
		}
		spec = "CRON_TZ=" + zone + " " + spec
	}
	s, err := cronParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadSchedule, d.Spec, err)
	}
	if ss, ok := s.(*cron.SpecSchedule); ok && ss.Hour&cronStarBit == 0 {
		return onceAWallClock{ss}, nil
	}
	return s, nil
}

// cronStarBit marks a wildcard field of a cron.SpecSchedule (robfig/cron's
// starBit).
const cronStarBit = 1 << 63

// maxRepeatSkip bounds the occurrences skipped in one repeated hour.
const maxRepeatSkip = 10_000

// onceAWallClock is a cron spec with a fixed hour: as cron does, a time
// that the zone's clock shows twice (the repeated hour when daylight time
// ends) occurs once, at its first pass. A wildcard hour runs at every real
// hour. (A time in a skipped hour does not occur that day.)
type onceAWallClock struct{ s *cron.SpecSchedule }

func (o onceAWallClock) Next(t time.Time) time.Time {
	n := o.s.Next(t)
	for i := 0; i < maxRepeatSkip && !n.IsZero() && secondPass(n.In(o.s.Location)); i++ {
		n = o.s.Next(n)
	}
	return n
}

// secondPass reports whether the wall clock of w was shown once before, in
// the hour(s) its zone's clock went back.
func secondPass(w time.Time) bool {
	_, off := w.Zone()
	_, before := w.Add(-3 * time.Hour).Zone()
	if before <= off {
		return false
	}
	e := w.Add(-time.Duration(before-off) * time.Second)
	y1, m1, d1 := w.Date()
	y2, m2, d2 := e.Date()
	return y1 == y2 && m1 == m2 && d1 == d2 && w.Hour() == e.Hour() && w.Minute() == e.Minute() && w.Second() == e.Second()
}

// Schedule registers the periodic job name on the queue: payload enqueued
// at every occurrence of spec. spec is a cron spec of 5 fields (minute
// hour day-of-month month day-of-week) or 6 (seconds first), a descriptor
// (@daily, @hourly, ...), or Every(d); it may start with CRON_TZ=<zone>
// (else UTC, or InLocation). Every process may register the same schedule:
// each occurrence is enqueued once. Schedule writes the registry and makes
// sure the next occurrence is enqueued; the queue's workers (in any
// process) run the occurrences and enqueue each next one. A different
// definition replaces the registered one unless that one has a higher
// Version (then ErrScheduleSuperseded); the pending occurrence of the old
// definition is then skipped.
//
// Errors: ErrBadSchedule naming the spec, ErrTooManySchedules
// (Config.MaxSchedules), ErrPayloadTooLarge, ErrScheduleSuperseded, option
// errors, and Redis's.
func (q *Queue) Schedule(ctx context.Context, name, spec string, payload []byte, opts ...ScheduleOption) error {
	if err := check.Name("schedule name", name); err != nil {
		return q.errorf("schedule: %w", err)
	}
	d, occ, err := q.scheduleDef(name, spec, payload, opts)
	if err != nil {
		return q.errorf("%w", err)
	}
	now := q.cfg.Now()
	if d.version < 0 {
		d.version = now.UnixMilli()
	}
	blob, err := json.Marshal(d)
	if err != nil {
		return q.errorf("schedule %q: %w", name, err)
	}
	first := occ.Next(now)
	if first.IsZero() {
		return q.errorf("schedule %q: %w %q: it has no occurrence", name, ErrBadSchedule, spec)
	}
	q.noteSeen(ctx)
	var code int64
	var next string
	for range 3 {
		res, err := cronRegisterScript.Run(ctx, q.p.Client(), []string{q.k.cron()},
			name, d.hash(blob), d.version, first.UnixMilli(), q.cfg.MaxSchedules, blob).Slice()
		if err != nil {
			return q.errorf("schedule %q: %w", name, err)
		}
		if len(res) != 2 {
			return q.errorf("schedule %q: the registry answered %v", name, res)
		}
		code, _ = res[0].(int64)
		next, _ = res[1].(string)
		if code != 4 {
			break
		}
		// Our clock is behind the worker that took the occurrence due at
		// prev: start after it, or it would run again (its ID is free).
		prev, err := strconv.ParseInt(next, 10, 64)
		if err != nil {
			return q.errorf("schedule %q: the registry holds prev %q", name, next)
		}
		if first = occ.Next(time.UnixMilli(prev)); first.IsZero() {
			return q.errorf("schedule %q: %w %q: it has no occurrence after %s", name, ErrBadSchedule, spec, time.UnixMilli(prev).UTC())
		}
	}
	if code == 4 {
		return q.errorf("schedule %q: the registry kept moving on", name)
	}
	switch code {
	case 2:
		return q.errorf("schedule %q: %w", name, ErrScheduleSuperseded)
	case 3:
		return q.errorf("schedule %q: %w: the limit is %d (Config.MaxSchedules)", name, ErrTooManySchedules, q.cfg.MaxSchedules)
	}
	due, err := strconv.ParseInt(next, 10, 64)
	if err != nil {
		return q.errorf("schedule %q: the registry holds next %q", name, next)
	}
	if due < 0 {
		return nil // the schedule has no further occurrence
	}
	if err := q.enqueueOccurrence(ctx, name, d, due); err != nil {
		return q.errorf("schedule %q: %w", name, err)
	}
	return nil
}

// scheduleDef checks a schedule and builds its definition (version -1:
// not given).
func (q *Queue) scheduleDef(name, spec string, payload []byte, opts []ScheduleOption) (scheduleDef, occurrences, error) {
	if err := validID(cronPrefix + name + ":0"); err != nil {
		return scheduleDef{}, nil, fmt.Errorf("schedule %q: %w", name, err)
	}
	if len(payload) > q.cfg.MaxPayload {
		return scheduleDef{}, nil, fmt.Errorf("schedule %q: %w: %d bytes, the limit is %d (Config.MaxPayload)", name, ErrPayloadTooLarge, len(payload), q.cfg.MaxPayload)
	}
	d := scheduleDef{Spec: spec, Payload: payload, MaxCatchUp: 1, version: -1}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&d); err != nil {
			return scheduleDef{}, nil, fmt.Errorf("schedule %q: %w", name, invalidOption(err))
		}
	}
	occ, err := d.parse()
	if err != nil {
		return scheduleDef{}, nil, fmt.Errorf("schedule %q: %w", name, err)
	}
	return d, occ, nil
}

// Unschedule removes the schedule name from the registry: its pending
// occurrence is skipped when it comes, and no other is enqueued. A
// schedule that is not registered is no error. A process that registers it
// again brings it back.
func (q *Queue) Unschedule(ctx context.Context, name string) error {
	if err := check.Name("schedule name", name); err != nil {
		return q.errorf("unschedule: %w", err)
	}
	pipe := q.p.Client().TxPipeline()
	pipe.HDel(ctx, q.k.cron(), "m:"+name, "d:"+name)
	pipe.Del(ctx, q.k.cronRun(name))
	if _, err := pipe.Exec(ctx); err != nil {
		return q.errorf("unschedule %q: %w", name, err)
	}
	return nil
}

// Schedules returns the names of the schedules registered on the queue.
func (q *Queue) Schedules(ctx context.Context) ([]string, error) {
	fs, err := q.p.Client().HKeys(ctx, q.k.cron()).Result()
	if err != nil {
		return nil, q.errorf("schedules: %w", err)
	}
	var names []string
	for _, f := range fs {
		if n, ok := strings.CutPrefix(f, "m:"); ok {
			names = append(names, n)
		}
	}
	return names, nil
}

// cronOpt gives an occurrence its ID (the ID option refuses the prefix).
func cronOpt(id string) EnqueueOption {
	return func(o *enqueueOpts) error { o.id = id; return nil }
}

func occurrenceID(name string, due int64) string {
	return cronPrefix + name + ":" + strconv.FormatInt(due, 10)
}

// enqueueOccurrence enqueues the occurrence of d due at due (unix ms),
// idempotently: one that exists already is no error.
func (q *Queue) enqueueOccurrence(ctx context.Context, name string, d scheduleDef, due int64) error {
	opts := []EnqueueOption{cronOpt(occurrenceID(name, due)), At(time.UnixMilli(due))}
	if d.Timeout > 0 {
		opts = append(opts, Timeout(d.Timeout))
	}
	if d.MaxAttempts > 0 {
		opts = append(opts, MaxAttempts(d.MaxAttempts))
	}
	if len(d.Headers) > 0 {
		opts = append(opts, Headers(d.Headers))
	}
	if d.Type != "" {
		opts = append(opts, Type(d.Type))
	}
	if d.Priority > 0 {
		opts = append(opts, Priority(d.Priority))
	}
	if d.Partition != "" {
		opts = append(opts, Partition(d.Partition))
	}
	// Not through Enqueue: like a retry, an occurrence is never refused by
	// Config.MaxLen, nor by MaxPartitions or MaxPartitionLen (a refused
	// successor would stall the schedule and hold the worker's handler slot
	// until the queue drains). A schedule has one pending occurrence, so
	// they exceed MaxLen, and the partitions MaxPartitions and their
	// MaxPartitionLen, by at most MaxSchedules.
	pr, err := q.prepare(d.Payload, opts)
	if err != nil {
		return err
	}
	if pr.part != "" {
		_, err = q.enqueuePartsUnder(ctx, []prepared{pr}, noPartBounds) // a duplicate is no error
		return err
	}
	_, err = q.enqueueOne(ctx, q.p.Client(), pr) // a duplicate is no error
	return err
}

// parseOccurrence splits cron:<name>:<due ms>.
func parseOccurrence(id string) (name string, due int64, ok bool) {
	rest, ok := strings.CutPrefix(id, cronPrefix)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 {
		return "", 0, false
	}
	due, err := strconv.ParseInt(rest[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return rest[:i], due, true
}

// successor decides, for the occurrence due at due taken at now, whether
// it runs and which occurrence comes next: with k later occurrences already
// due (missed), it runs when k == 0 or k < maxCatchUp, and the next one is
// the first future occurrence when k == 0 or maxCatchUp == 0, else the
// oldest of the latest maxCatchUp missed ones (which repeats the decision
// when taken).
func successor(occ occurrences, due, now time.Time, maxCatchUp int) (run bool, next time.Time) {
	// Occurrences due within cronLateGrace are not missed: the taker's
	// clock may be ahead of the promoter's, or the take late under load.
	now = now.Add(-cronLateGrace)
	t := occ.Next(due)
	if t.IsZero() || t.After(now) {
		return true, t
	}
	// first is the first missed one; ring[(j-1)%maxCatchUp] the j-th,
	// for the latest maxCatchUp.
	first := t
	ring := make([]time.Time, maxCatchUp)
	k := 0
	for ; !t.IsZero() && !t.After(now); t = occ.Next(t) {
		k++
		if maxCatchUp > 0 {
			ring[(k-1)%maxCatchUp] = t
		}
		if k >= maxMissedScan {
			// Too many to count: skip them all.
			return false, occ.Next(now)
		}
	}
	future := t
	run = k < maxCatchUp
	switch {
	case maxCatchUp == 0:
		return run, future
	case k < maxCatchUp:
		return run, first
	default:
		// The oldest of the latest maxCatchUp: the (k-maxCatchUp+1)-th.
		return run, ring[(k-maxCatchUp)%maxCatchUp]
	}
}

// cronTake is called by a worker that took an occurrence, before its
// handler: it advances the schedule (enqueues the next occurrence) and
// tells whether this one runs. copyOf identifies the copy of the
// occurrence (its enqueue time in unix ms, kept by a recovery): an ID that
// lapsed (UniqueTTL) may let a second copy in, which must not pass for a
// redelivery of the first. timeout is the run's timeout (0: none), hb the
// heartbeat's TTL plus interval. ok false: not an occurrence ID.
func (q *Queue) cronTake(ctx context.Context, id string, copyOf int64, deliveries int, timeout, hb time.Duration) (name string, due time.Time, run bool, def scheduleDef, err error) {
	name, dueMs, ok := parseOccurrence(id)
	if !ok {
		return "", time.Time{}, true, scheduleDef{}, nil
	}
	due = time.UnixMilli(dueMs)
	c := q.p.Client()
	vals, err := c.HMGet(ctx, q.k.cron(), "m:"+name, "d:"+name).Result()
	if err != nil {
		return name, due, false, scheduleDef{}, err
	}
	meta, _ := vals[0].(string)
	blob, _ := vals[1].(string)
	if meta == "" || blob == "" {
		return name, due, false, scheduleDef{}, nil // removed
	}
	var d scheduleDef
	if err := json.Unmarshal([]byte(blob), &d); err != nil {
		return name, due, false, scheduleDef{}, fmt.Errorf("schedule %q: bad definition in the registry: %w", name, err)
	}
	occ, err := d.parse()
	if err != nil {
		return name, due, false, scheduleDef{}, err
	}
	wantRun, next := successor(occ, due, q.cfg.Now(), d.MaxCatchUp)
	nextMs := int64(-1)
	if !next.IsZero() {
		nextMs = next.UnixMilli()
	}
	if d.Timeout > 0 {
		timeout = d.Timeout
	}
	if timeout <= 0 {
		timeout = time.Hour
	}
	res, err := cronTakeScript.Run(ctx, c, []string{q.k.cron(), q.k.cronRun(name)},
		name, dueMs, d.hash([]byte(blob)), nextMs, boolArg(wantRun), boolArg(d.NoOverlap), (timeout + hb).Milliseconds(), copyOf, deliveries).Int64Slice()
	if err != nil {
		return name, due, false, scheduleDef{}, err
	}
	if len(res) != 3 {
		return name, due, false, scheduleDef{}, fmt.Errorf("schedule %q: the registry answered %v", name, res)
	}
	if res[0] != 0 && res[2] >= 0 {
		if err := q.enqueueOccurrence(ctx, name, d, res[2]); err != nil {
			return name, due, false, scheduleDef{}, err
		}
	}
	// The registered definition: a deploy that changed the payload or the
	// type (JobType) owns this occurrence even if it was enqueued by the
	// one before (same ID).
	return name, due, res[1] == 1, d, nil
}

// cronDone clears the running marker of the schedule's run due at due
// (the copy copyOf, see cronTake), once its outcome is final (done or dead).
func (q *Queue) cronDone(ctx context.Context, name string, due time.Time, copyOf int64) error {
	return cronDoneScript.Run(ctx, q.p.Client(), []string{q.k.cronRun(name)}, runMarker(due.UnixMilli(), copyOf)).Err()
}

// runMarker is the value of a schedule's running marker: the due ms and
// the copy of the occurrence that runs.
func runMarker(due, copyOf int64) string {
	return strconv.FormatInt(due, 10) + ":" + strconv.FormatInt(copyOf, 10)
}

const cronMetaLua = `
local function meta(m)
  return string.match(m, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
end
`

// cronRegisterScript registers a definition.
// KEYS: registry. ARGV: name, hash, version, first due ms, max schedules,
// definition. Returns {code, next}: 0 written, 1 unchanged, 2 a newer
// version stands, 3 too many schedules, 4 first due is not after the last
// occurrence taken (returned instead of next): the caller's clock is
// behind; it starts the new definition after that one.
var cronRegisterScript = redis.NewScript(cronMetaLua + `
local f = 'm:' .. ARGV[1]
local m = redis.call('HGET', KEYS[1], f)
if m then
  local ver, h, nxt, prev, prun = meta(m)
  if h == ARGV[2] then
    if tonumber(ARGV[3]) > tonumber(ver) then
      redis.call('HSET', KEYS[1], f, ARGV[3] .. '|' .. h .. '|' .. nxt .. '|' .. prev .. '|' .. prun)
    end
    return {1, nxt}
  end
  -- Equal versions: the higher hash stands, whatever the order.
  if tonumber(ver) > tonumber(ARGV[3]) or (tonumber(ver) == tonumber(ARGV[3]) and h > ARGV[2]) then return {2, nxt} end
  if prev ~= '' and tonumber(prev) >= tonumber(ARGV[4]) then return {4, prev} end
elseif redis.call('HLEN', KEYS[1]) >= 2 * tonumber(ARGV[5]) then
  return {3, ''}
end
redis.call('HSET', KEYS[1], f, ARGV[3] .. '|' .. ARGV[2] .. '|' .. ARGV[4] .. '||0', 'd:' .. ARGV[1], ARGV[6])
return {0, ARGV[4]}
`)

// cronTakeScript advances a schedule when a worker takes its occurrence.
// KEYS: registry, running marker. ARGV: name, due ms, definition hash, next
// due ms (-1: none), run (the catch-up decision), no overlap, marker TTL ms,
// copy (see cronTake; the marker is "<due>:<copy>"), deliveries.
// Returns {code, run, next}: code 0 stale (nothing to do), 1 advanced, 2
// taken before (a redelivery: enqueue next again, run if it was running),
// 3 recovered from a dead consumer after the schedule moved past it (run
// again unless NoOverlap and another run holds the marker; no successor).
var cronTakeScript = redis.NewScript(cronMetaLua + `
local f = 'm:' .. ARGV[1]
local m = redis.call('HGET', KEYS[1], f)
if not m then return {0, 0, -1} end
local ver, h, nxt, prev, prun = meta(m)
if h ~= ARGV[3] then return {0, 0, -1} end
local mark = ARGV[2] .. ':' .. ARGV[8]
if nxt == ARGV[2] then
  local run = ARGV[5]
  if run == '1' then
    local cur = redis.call('GET', KEYS[2])
    if ARGV[6] == '1' and cur and cur ~= mark then run = '0' end
  end
  if run == '1' then redis.call('SET', KEYS[2], mark, 'PX', ARGV[7]) end
  redis.call('HSET', KEYS[1], f, ver .. '|' .. h .. '|' .. ARGV[4] .. '|' .. ARGV[2] .. '|' .. run)
  return {1, tonumber(run), tonumber(ARGV[4])}
end
if prev == ARGV[2] then
  local run = 0
  if prun == '1' and redis.call('GET', KEYS[2]) == mark then
    run = 1
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
  end
  return {2, run, tonumber(nxt)}
end
-- Recovered (its consumer died while running it) after its successors
-- were taken: it ran, perhaps not to the end. Every occurrence before
-- next was taken once, so a recovered one of this definition is not a
-- stray copy (those are fresh: deliveries 0).
if tonumber(ARGV[9]) > 0 and (tonumber(nxt) < 0 or tonumber(ARGV[2]) < tonumber(nxt)) then
  local cur = redis.call('GET', KEYS[2])
  if ARGV[6] == '1' and cur and cur ~= mark then return {3, 0, -1} end
  redis.call('SET', KEYS[2], mark, 'PX', ARGV[7])
  return {3, 1, -1}
end
return {0, 0, -1}
`)

// cronDoneScript deletes a running marker if it is still the run's.
// KEYS: marker. ARGV: the run's marker value (runMarker).
var cronDoneScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`)

// cronStart is Worker.run's hook for an occurrence of a schedule, before
// the handler: it sets job.Schedule and job.Due and, on the first attempt,
// advances the schedule. It reports whether the handler runs. A retry runs
// (its first attempt advanced the schedule). Redis errors are retried with
// backoff until the worker drains: the occurrence stays in the processing
// list meanwhile, and goes back to the ready list with the drain.
func (w *Worker) cronStart(d *delivery, job *Job) bool {
	name, due, ok := parseOccurrence(d.env.id)
	if !ok {
		return true
	}
	job.Schedule, job.Due = name, time.UnixMilli(due)
	if d.env.attempt > 0 {
		return true
	}
	timeout := d.env.timeout
	if timeout == 0 {
		timeout = w.cfg.JobTimeout
	}
	hb := w.c.cfg.HeartbeatTTL + w.c.cfg.HeartbeatInterval
	var bo troubleBackoff
	for {
		ctx, cancel := context.WithTimeout(w.hardCtx, cronCallTimeout)
		_, _, run, def, err := w.q.cronTake(ctx, d.env.id, d.env.enqueuedAt.UnixMilli(), d.env.deliveries, timeout, hb)
		cancel()
		if err == nil {
			if run {
				// The registered payload and type, as the definition
				// stands now. d.env carries them to a retry
				// (Worker.outcome), which does not come back here; the
				// handler gets its own copy of the payload, which it may
				// change.
				d.env.payload, d.env.typ = def.Payload, def.Type
				job.Payload, job.Type = bytes.Clone(def.Payload), def.Type
			}
			if !run {
				w.log.Debug("queue: occurrence skipped (stale, missed, or NoOverlap)", "job", d.env.id)
			}
			return run
		}
		w.log.Warn("queue: taking the occurrence of a schedule failed; retrying", "job", d.env.id, "err", err)
		if !bo.wait(w.hardCtx) {
			return false
		}
	}
}

// cronSkip acks an occurrence that does not run; once the worker is
// drained it leaves it to go back to the ready list.
func (w *Worker) cronSkip(d delivery) {
	defer w.freeSlot()
	if w.hardCtx.Err() != nil {
		return
	}
	select {
	case w.acks <- ackOp{kind: ackDone, elem: d.elem, id: d.env.id, unique: d.env.unique, ref: d.env.ref}:
	case <-w.ackerGone:
	}
}

// cronEnd clears the running marker of an occurrence whose outcome is final.
func (w *Worker) cronEnd(job *Job) {
	ctx, cancel := context.WithTimeout(w.hardCtx, cronCallTimeout)
	defer cancel()
	if err := w.q.cronDone(ctx, job.Schedule, job.Due, job.EnqueuedAt.UnixMilli()); err != nil {
		w.log.Warn("queue: clearing the running marker of a schedule failed; it expires", "schedule", job.Schedule, "err", err)
	}
}

// cronHold extends the running marker of an occurrence that will retry
// at due, so that NoOverlap holds while it waits: until its next attempt
// may have timed out and its process's death been noticed.
func (w *Worker) cronHold(job *Job, due time.Time, timeout time.Duration) {
	if timeout <= 0 {
		timeout = time.Hour
	}
	ttl := max(due.Sub(w.q.cfg.Now()), 0) + timeout + w.c.cfg.HeartbeatTTL + w.c.cfg.HeartbeatInterval
	ctx, cancel := context.WithTimeout(w.hardCtx, cronCallTimeout)
	defer cancel()
	err := cronHoldScript.Run(ctx, w.q.p.Client(), []string{w.q.k.cronRun(job.Schedule)},
		runMarker(job.Due.UnixMilli(), job.EnqueuedAt.UnixMilli()), ttl.Milliseconds()).Err()
	if err != nil {
		w.log.Warn("queue: extending the running marker of a schedule failed; NoOverlap may not hold through the retry", "schedule", job.Schedule, "err", err)
	}
}

// cronHoldScript extends a running marker if it is still the run's.
// KEYS: marker. ARGV: the run's marker value, TTL ms.
var cronHoldScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`)

// cronCallTimeout bounds the registry calls around an occurrence.
const cronCallTimeout = 10 * time.Second
