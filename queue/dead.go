package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DeadJob is a job in the dead letters.
type DeadJob struct {
	// ID names the dead letter, for Requeue: the job's ID, or, when a dead
	// job with that ID was already there (an ID given with the ID option
	// and reused), "<job ID>~<died at, unix ms>" so that both are kept.
	ID          string    `json:"id"`
	Payload     []byte    `json:"payload"`
	Reason      string    `json:"reason"` // the last error, or why the job could not run
	Attempts    int       `json:"attempts"`
	MaxAttempts int       `json:"max_attempts"`
	Deliveries  int       `json:"deliveries"` // times recovered from a dead consumer
	EnqueuedAt  time.Time `json:"enqueued_at"`
	DiedAt      time.Time `json:"died_at"`
	// Malformed is set when the element in Redis did not decode; Payload
	// then holds the raw element and the job cannot be requeued.
	Malformed bool `json:"malformed"`
	// Headers are the job's headers (Requeue keeps them); nil for none.
	Headers map[string]string `json:"headers,omitempty"`
	// Type is the job's type (the Type option; Requeue keeps it); "" for
	// none.
	Type string `json:"type,omitempty"`
	// Partition is the job's partition (the Partition option; Requeue
	// puts the job back in it); "" for none.
	Partition string `json:"partition,omitempty"`
}

// deadRecord is what the dead letters store per job, raw (a payload is
// neither escaped nor encoded):
//
//	bqd1|<died at, unix ms>|<attempts>|<reason length>|<reason><element>
//
// A payload over inlineMax is not in the element: it stays in the payloads
// hash, and the dead refs hash maps the dead letter to its ref. Versions
// before this format stored JSON with the element in base64; those records
// are still read.
type deadRecord struct {
	Reason   string `json:"reason"`
	DiedMs   int64  `json:"died_ms"`
	Attempts int    `json:"attempts"`
	Element  []byte `json:"element"`
}

const deadRecordVersion = "bqd1|"

// deadRecordHead is a record without its element.
func deadRecordHead(diedMs int64, attempts int, reason string) []byte {
	b := make([]byte, 0, len(deadRecordVersion)+40+len(reason))
	b = append(b, deadRecordVersion...)
	b = strconv.AppendInt(b, diedMs, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(attempts), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(len(reason)), 10)
	b = append(b, '|')
	return append(b, reason...)
}

func parseDeadRecord(data []byte) (deadRecord, error) {
	var r deadRecord
	rest, ok := bytes.CutPrefix(data, []byte(deadRecordVersion))
	if !ok {
		err := json.Unmarshal(data, &r) // the format of earlier versions
		return r, err
	}
	var nums [3]int64
	for i := range nums {
		j := bytes.IndexByte(rest, '|')
		if j < 0 {
			return r, fmt.Errorf("dead record cut short after %d of 3 fields", i)
		}
		n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
		if err != nil {
			return r, fmt.Errorf("dead record field %d is %q", i, preview(rest[:j]))
		}
		nums[i], rest = n, rest[j+1:]
	}
	if nums[2] < 0 || nums[2] > int64(len(rest)) {
		return r, fmt.Errorf("dead record reason length %d out of range", nums[2])
	}
	r.DiedMs, r.Attempts = nums[0], int(nums[1])
	r.Reason, r.Element = string(rest[:nums[2]]), rest[nums[2]:]
	return r, nil
}

// job returns the dead job, and the ref of its payload when that is kept
// apart (Payload is then still to be read).
func (r deadRecord) job(id string) (DeadJob, string) {
	d := DeadJob{ID: id, Reason: r.Reason, DiedAt: time.UnixMilli(r.DiedMs), Attempts: r.Attempts}
	e, err := decodeEnvelope(r.Element)
	if err != nil {
		d.Malformed, d.Payload = true, r.Element
		return d, ""
	}
	d.Payload, d.MaxAttempts, d.Deliveries, d.EnqueuedAt = e.payload, e.maxAttempts, e.deliveries, e.enqueuedAt
	d.Headers, d.Type, d.Partition = headerMap(e.headers), e.typ, e.part
	return d, e.ref
}

// Dead lists dead jobs, newest first, skipping offset and returning at most
// limit (1..1000). It is one call to Redis, which returns at most about
// 4 MiB of dead letters (at least one): with large payloads it returns
// fewer than limit, and the next page starts at offset + len(jobs).
func (q *Queue) Dead(ctx context.Context, offset, limit int) ([]DeadJob, error) {
	if offset < 0 || limit < 1 || limit > 1000 {
		return nil, q.errorf("dead: offset must be >= 0 and limit in 1..1000, got %d and %d", offset, limit)
	}
	c := q.p.Client()
	vals, err := deadReadScript.Run(ctx, c, []string{q.k.deadIdx, q.k.deadData, q.k.payloads, q.k.deadRefs}, offset, limit).Slice()
	if err != nil {
		return nil, q.errorf("dead: %w", err)
	}
	out := make([]DeadJob, 0, len(vals)/3)
	var refs []string
	var refJobs []int // index in out of the job each ref belongs to
	for i := 0; i+2 < len(vals); i += 3 {
		id, _ := vals[i].(string)
		s, ok := vals[i+1].(string)
		if !ok {
			continue // trimmed while the index still named it
		}
		r, err := parseDeadRecord([]byte(s))
		if err != nil {
			out = append(out, DeadJob{ID: id, Malformed: true, Payload: []byte(s), Reason: "unreadable dead record: " + err.Error()})
			continue
		}
		d, ref := r.job(id)
		if ref != "" {
			refs, refJobs = append(refs, ref), append(refJobs, len(out))
		}
		out = append(out, d)
	}
	if len(refs) > 0 {
		// Payloads kept apart: one plain read, within the bound the script
		// checked.
		pays, err := c.HMGet(ctx, q.k.payloads, refs...).Result()
		if err != nil {
			return nil, q.errorf("dead: reading payloads: %w", err)
		}
		for i, p := range pays {
			if s, ok := p.(string); ok {
				out[refJobs[i]].Payload = []byte(s)
			}
		}
	}
	return out, nil
}

// Requeue moves dead jobs back to the ready list with a fresh set of
// attempts, one call to Redis per job. It returns how many moved; IDs that
// are not dead, or whose element is malformed, are reported in the error
// (ErrNotFound).
func (q *Queue) Requeue(ctx context.Context, ids ...string) (int, error) {
	c := q.p.Client()
	moved := 0
	var errs []error
	for _, id := range ids {
		s, err := c.HGet(ctx, q.k.deadData, id).Result()
		if errors.Is(err, redis.Nil) {
			errs = append(errs, fmt.Errorf("%w: %s", ErrNotFound, id))
			continue
		}
		if err != nil {
			return moved, q.errorf("requeue %s: %w", id, err)
		}
		r, err := parseDeadRecord([]byte(s))
		if err != nil {
			errs = append(errs, fmt.Errorf("requeue %s: unreadable dead record: %w", id, err))
			continue
		}
		e, err := decodeEnvelope(r.Element)
		if err != nil {
			errs = append(errs, fmt.Errorf("requeue %s: %w", id, err))
			continue
		}
		// A fresh start; the idempotency key was released when the job died
		// and is not taken again (so no window either), and a deadline,
		// which may be why it died, no longer holds: requeueing is asking
		// for the run.
		e.attempt, e.deliveries, e.unique = 0, 0, false
		e.deadline, e.window = time.Time{}, 0
		n, err := requeueDeadScript.Run(ctx, c, append([]string{q.k.deadIdx, q.k.deadData, q.k.readyAt(e.level), q.k.payloads, q.k.deadRefs, q.k.bell}, q.partKeys()...),
			id, e.encode(), e.ref, r.DiedMs, len(s)).Int()
		if err != nil {
			return moved, q.errorf("requeue %s: %w", id, err)
		}
		if n == 0 {
			errs = append(errs, fmt.Errorf("%w: %s", ErrNotFound, id))
			continue
		}
		moved++
	}
	if len(errs) > 0 {
		return moved, q.errorf("requeue: %w", errors.Join(errs...))
	}
	return moved, nil
}

// Purge deletes the dead jobs there are when it starts, oldest first, and
// returns how many it deleted. It takes one call per 100 jobs or 4 MiB, so
// that no call holds Redis long; on an error it returns how many it had
// deleted so far. Jobs that die while it runs are kept (it deletes those
// that died no later than the newest dead job at its start, by their time
// of death).
func (q *Queue) Purge(ctx context.Context) (int, error) {
	c := q.p.Client()
	newest, err := c.ZRangeWithScores(ctx, q.k.deadIdx, -1, -1).Result()
	if err != nil {
		return 0, q.errorf("purge: %w", err)
	}
	if len(newest) == 0 {
		return 0, nil
	}
	upTo := int64(newest[0].Score)
	purged := 0
	for {
		n, err := purgeScript.Run(ctx, c, []string{q.k.deadIdx, q.k.deadData, q.k.payloads, q.k.deadRefs}, upTo).Int()
		if err != nil {
			return purged, q.errorf("purge: %w", err)
		}
		if n == 0 {
			return purged, nil
		}
		purged += n
	}
}

// deadLetter is one job on its way to the dead letters.
type deadLetter struct {
	id       string // the dead letter's ID: the job's (deadIDFor)
	reason   string // why it died; truncated to 8 KiB
	attempts int    // runs it had
	unique   bool   // it holds an idempotency key, released as it dies
}

// deadMoveArgs builds the KEYS and ARGV of deadScript that move elem off
// the processing list proc to the dead letters, if it is still there.
func (q *Queue) deadMoveArgs(proc string, elem []byte, d deadLetter) ([]string, []any) {
	now := q.cfg.Now()
	// The script appends elem to the record: it is sent once.
	return q.deadScriptArgs(proc, elem, d.record(now), elem, d, now)
}

// deadAddArgs builds the KEYS and ARGV of deadScript that add elem to the
// dead letters, taking it off no list.
func (q *Queue) deadAddArgs(elem []byte, d deadLetter) ([]string, []any) {
	now := q.cfg.Now()
	return q.deadScriptArgs(q.k.proc(""), "", append(d.record(now), elem...), elem, d, now)
}

// record is the dead record without its element (see deadRecord).
func (d deadLetter) record(now time.Time) []byte {
	return deadRecordHead(now.UnixMilli(), d.attempts, truncate(d.reason, 8<<10))
}

// deadScriptArgs lays out deadScript's KEYS and ARGV (see deadScript): take
// is the element to take off list (the string "" for none), rec the record
// as sent. A job taken off a list carries its run's cancel key: a run
// cancelled while it held the job is dropped, not dead-lettered.
func (q *Queue) deadScriptArgs(list string, take any, rec, elem []byte, d deadLetter, now time.Time) ([]string, []any) {
	var ref string
	e, err := decodeEnvelope(elem)
	if err == nil {
		ref = e.ref
	}
	ks := []string{list, q.k.deadIdx, q.k.deadData, q.k.payloads, q.k.deadRefs}
	if d.unique {
		ks = append(ks, q.k.unique(d.id))
	}
	withCancel := "0"
	if _, adding := take.(string); !adding && err == nil && e.id != "" {
		ks, withCancel = append(ks, q.k.runCancel(e.id, markerValue(e))), "1"
	}
	return ks, []any{take, d.id, rec, now.UnixMilli(), q.cfg.DeadLetterMax, now.Add(-q.cfg.DeadLetterMaxAge).UnixMilli(), ref, "0", withCancel}
}

// deadArgResent is the index in deadScript's ARGV of the flag of a resend.
const deadArgResent = 7

// deadDroppedCancelled is deadScript's reply for a job it dropped because
// its run was cancelled.
const deadDroppedCancelled = 3

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "... (truncated)"
}

// deadIDFor names a dead entry. A decodable job keeps its ID; a malformed
// element gets one derived from the time.
func deadIDFor(now time.Time, e *envelope) string {
	if e != nil {
		return e.id
	}
	return "malformed-" + strconv.FormatInt(now.UnixNano(), 36) + "-" + strconv.FormatUint(rand.Uint64()%1e9, 36)
}
