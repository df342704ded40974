package queue

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// An envelope is one list element: a job with everything a worker needs, so a
// fetch needs no second read and no script has to parse or build anything.
//
//	bq1|<id>|<attempt>|<max attempts>|<deliveries>|<enqueued at, unix ms>|<timeout ms>|<flags>|[<deadline, unix ms>|][<window ms>|]<payload>
//
// The header is ASCII; the payload is the caller's bytes, untouched. attempt
// counts failed runs so far (0 on the first run); deliveries counts the times
// the job was handed out and then recovered from a dead consumer. flags is
// empty or, in this order, "u" (the job holds an idempotency key), "r",
// "d", "w", "h", "t", "g" and "p<level>" (the letter and one digit). The
// version prefix lets a later format coexist with this one.
//
// With flag "h" the job has headers (Header, Headers): after the last '|'
// of the fields above come the length of the header section, '|', and the
// section (headers.go), then the payload or ref:
//
//	...|<flags>|[...|]<section length>|<section><payload>
//
// A job without headers has no flag "h" and not one byte more. Versions
// before the "h" flag decode it as an unknown flag (see "Upgrading" in
// docs/queue.md).
//
// With flag "t" the job has a type (the Type option, typed.go): after the
// header section (if any) come the type's length, '|', and the type, then
// the payload or ref:
//
//	...|<flags>|[...|][<section length>|<section>]<type length>|<type><payload>
//
// Length-prefixed like the header section, so no byte of a type can be
// mistaken for a separator. A job without a type has no flag "t" and not
// one byte more; versions before it decode "t" as an unknown flag.
//
// With flag "g" the job belongs to a partition (the Partition option,
// parts.go): the partition key is the first field after the flags,
// before the deadline and window fields,
//
//	...|<flags>|<partition>|[<deadline>|][<window>|]...
//
// so that the scripts that route a job back to its partition (promotion,
// recovery, Requeue) find it with one anchored pattern (partLua) without
// parsing the rest. A job without a partition has no flag "g" and not one
// byte more; versions before it decode "g" as an unknown flag.
//
// With flag "p" the job has a priority level above 0 (the Priority option,
// levels.go): the level's digit follows the letter, "p1" to "p3", in the
// flags field, where the scripts that route a job to its level's ready
// list read it without parsing more (no other flag is a letter followed by
// a digit; partLua reads the flags as letters and digits, so "p<l>" does
// not hide "g"). A level-0 job has no flag "p" and not one byte more;
// versions before it decode "p" as an unknown flag. A partitioned job
// with a level holds both flags ("g" and "p<l>", in that fixed order):
// partLua reads the level too, for the job's band in its partition
// (parts.go, "Levels within a partition").
//
// With flag "r" the element ends with a payload ref instead of the payload,
// which is in the queue's payloads hash: a payload over inlineMax is written
// to Redis once at enqueue and read once per run, while the element that
// every ack, retry, promotion and recovery sends back and forth stays a few
// dozen bytes. Payloads up to inlineMax ride in the element, so a small job
// needs no second read. Versions before the "r" flag decode it as an unknown
// flag (see "Upgrading" in docs/queue.md).
const envelopeVersion = "bq1|"

// wakeMarker is pushed to the head of the ready list when a delayed job
// becomes the earliest one, so that a scheduler in some process re-reads the
// next due time at once. Workers recognise it and never run it as a job.
const wakeMarker = "bq1!wake"

const maxIDLen = 200

type envelope struct {
	id          string
	attempt     int // failed runs so far
	maxAttempts int
	deliveries  int
	enqueuedAt  time.Time
	timeout     time.Duration
	unique      bool
	headers     []byte        // the header section (flag "h"); nil without headers
	typ         string        // the job's type (flag "t"); "" without
	part        string        // the job's partition (flag "g", parts.go); "" without
	level       int           // the priority level (flag "p<level>"); 0 without
	ref         string        // the payload is in the payloads hash under ref
	deadline    time.Time     // zero: none (see Deadline)
	window      time.Duration // zero: none (see UniqueFor)
	payload     []byte        // with a ref: empty until loaded
}

// inlineMax is the largest payload kept inside the element.
const inlineMax = 4 << 10

// errMalformed wraps every decode failure.
var errMalformed = errors.New("queue: malformed job")

func (e *envelope) encode() []byte {
	b := make([]byte, 0, len(envelopeVersion)+len(e.id)+48+len(e.headers)+len(e.typ)+len(e.payload))
	return e.appendTo(b)
}

func (e *envelope) appendTo(b []byte) []byte {
	b = append(b, envelopeVersion...)
	b = append(b, e.id...)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(e.attempt), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(e.maxAttempts), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(e.deliveries), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, e.enqueuedAt.UnixMilli(), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, e.timeout.Milliseconds(), 10)
	b = append(b, '|')
	if e.unique {
		b = append(b, 'u')
	}
	if e.ref != "" {
		b = append(b, 'r')
	}
	if !e.deadline.IsZero() {
		b = append(b, 'd')
	}
	if e.window > 0 {
		b = append(b, 'w')
	}
	if e.headers != nil {
		b = append(b, 'h')
	}
	if e.typ != "" {
		b = append(b, 't')
	}
	if e.part != "" {
		b = append(b, 'g')
	}
	if e.level > 0 {
		b = append(b, 'p', byte('0'+e.level))
	}
	if e.part != "" {
		// The partition comes first after the flags, so that a script
		// finds it with one anchored pattern (partLua).
		b = append(b, '|')
		b = append(b, e.part...)
	}
	if !e.deadline.IsZero() {
		b = append(b, '|')
		b = strconv.AppendInt(b, e.deadline.UnixMilli(), 10)
	}
	if e.window > 0 {
		b = append(b, '|')
		b = strconv.AppendInt(b, e.window.Milliseconds(), 10)
	}
	b = append(b, '|')
	if e.headers != nil {
		b = strconv.AppendInt(b, int64(len(e.headers)), 10)
		b = append(b, '|')
		b = append(b, e.headers...)
	}
	if e.typ != "" {
		b = strconv.AppendInt(b, int64(len(e.typ)), 10)
		b = append(b, '|')
		b = append(b, e.typ...)
	}
	if e.ref != "" {
		return append(b, e.ref...)
	}
	return append(b, e.payload...)
}

// decodeEnvelope parses an element. The payload aliases data.
func decodeEnvelope(data []byte) (envelope, error) {
	var e envelope
	rest, ok := bytes.CutPrefix(data, []byte(envelopeVersion))
	if !ok {
		return e, fmt.Errorf("%w: unknown format (want prefix %q, got %q)", errMalformed, envelopeVersion, preview(data))
	}
	var fields [7][]byte
	for i := range fields {
		j := bytes.IndexByte(rest, '|')
		if j < 0 {
			return e, fmt.Errorf("%w: header cut short after %d of 7 fields", errMalformed, i)
		}
		fields[i], rest = rest[:j], rest[j+1:]
	}
	if err := validID(string(fields[0])); err != nil {
		return e, fmt.Errorf("%w: %v", errMalformed, err)
	}
	e.id = string(fields[0])
	nums := [5]int64{}
	names := [5]string{"attempt", "max attempts", "deliveries", "enqueued at", "timeout"}
	for i := range nums {
		n, err := strconv.ParseInt(string(fields[i+1]), 10, 64)
		if err != nil || (n < 0 && i != 3) { // a clock may read before 1970
			return e, fmt.Errorf("%w: field %s is %q", errMalformed, names[i], preview(fields[i+1]))
		}
		nums[i] = n
	}
	// The bounds are those the API enforces (MaxAttempts, Timeout), so
	// whatever Enqueue accepts decodes (FuzzEnqueueDecodes).
	if nums[0] > maxCount || nums[1] > maxCount || nums[1] < 1 || nums[2] > maxCount {
		return e, fmt.Errorf("%w: attempt %d / max attempts %d / deliveries %d out of range", errMalformed, nums[0], nums[1], nums[2])
	}
	if nums[4] > math.MaxInt64/int64(time.Millisecond) {
		return e, fmt.Errorf("%w: timeout %dms out of range", errMalformed, nums[4])
	}
	e.attempt, e.maxAttempts, e.deliveries = int(nums[0]), int(nums[1]), int(nums[2])
	e.enqueuedAt = time.UnixMilli(nums[3])
	e.timeout = time.Duration(nums[4]) * time.Millisecond
	flags, err := parseFlags(fields[6])
	if err != nil {
		return e, err
	}
	e.unique, e.level = flags.unique, flags.level
	if flags.part {
		j := bytes.IndexByte(rest, '|')
		if j < 0 {
			return e, fmt.Errorf("%w: the partition field is missing", errMalformed)
		}
		if err := validPartition(string(rest[:j])); err != nil {
			return e, fmt.Errorf("%w: %v", errMalformed, err)
		}
		e.part, rest = string(rest[:j]), rest[j+1:]
	}
	if flags.deadline {
		var ms int64
		if ms, rest, err = numberField(rest, "deadline"); err != nil {
			return e, err
		}
		e.deadline = time.UnixMilli(ms)
	}
	if flags.window {
		var ms int64
		if ms, rest, err = numberField(rest, "window"); err != nil {
			return e, err
		}
		e.window = time.Duration(ms) * time.Millisecond
	}
	if flags.headers {
		if e.headers, rest, err = cutHeaderSection(rest); err != nil {
			return e, fmt.Errorf("%w: %v", errMalformed, err)
		}
	}
	if flags.typ {
		if e.typ, rest, err = cutTypeField(rest); err != nil {
			return e, fmt.Errorf("%w: %v", errMalformed, err)
		}
	}
	if flags.ref {
		if !validRef(rest) {
			return e, fmt.Errorf("%w: payload ref %q is not 1-64 letters and digits", errMalformed, preview(rest))
		}
		e.ref = string(rest)
		return e, nil
	}
	e.payload = rest
	return e, nil
}

// envelopeFlags are the letters of an element's flags field.
type envelopeFlags struct {
	unique, ref, deadline, window, headers, typ, part bool
	level                                             int // "p<level>", 1..MaxLevel; 0 without
}

// numberField reads the field a flag adds: a positive number of
// milliseconds, below the year 10000 (a deadline) or that long (a window).
func numberField(rest []byte, name string) (int64, []byte, error) {
	j := bytes.IndexByte(rest, '|')
	if j < 0 {
		return 0, rest, fmt.Errorf("%w: the %s field is missing", errMalformed, name)
	}
	ms, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil || ms <= 0 || ms >= maxDue.UnixMilli() {
		return 0, rest, fmt.Errorf("%w: %s %q", errMalformed, name, preview(rest[:j]))
	}
	return ms, rest[j+1:], nil
}

// parseFlags reads the flags field: known letters, each at most once, in
// the order the encoder writes them ("u", "r", "d", "w", "h", "t", "g",
// "p" with its level's digit).
func parseFlags(f []byte) (envelopeFlags, error) {
	var fl envelopeFlags
	const order = "urdwhtgp"
	at := 0
	for k := 0; k < len(f); k++ {
		c := f[k]
		i := bytes.IndexByte([]byte(order[at:]), c)
		if i < 0 {
			return fl, fmt.Errorf("%w: unknown flags %q", errMalformed, preview(f))
		}
		at += i + 1
		switch c {
		case 'u':
			fl.unique = true
		case 'r':
			fl.ref = true
		case 'd':
			fl.deadline = true
		case 'w':
			fl.window = true
		case 'h':
			fl.headers = true
		case 't':
			fl.typ = true
		case 'g':
			fl.part = true
		case 'p': // its level's digit follows
			if k+1 == len(f) || f[k+1] < '1' || f[k+1] > '0'+MaxLevel {
				return fl, fmt.Errorf("%w: priority level out of range in flags %q", errMalformed, preview(f))
			}
			fl.level = int(f[k+1] - '0')
			k++
		}
	}
	return fl, nil
}

// cutHeaderSection cuts "<length>|<section>" off the front of rest and
// checks the section. The section aliases rest.
func cutHeaderSection(rest []byte) (section, after []byte, err error) {
	j := bytes.IndexByte(rest, '|')
	if j < 0 || j > 5 {
		return nil, nil, fmt.Errorf("header section length %q", preview(rest))
	}
	n, err := strconv.Atoi(string(rest[:j]))
	if err != nil || n < 1 || n > maxHeaderSection || n > len(rest)-j-1 || rest[0] == '0' || rest[0] == '+' {
		return nil, nil, fmt.Errorf("header section length %q out of range", preview(rest[:j]))
	}
	section, after = rest[j+1:j+1+n], rest[j+1+n:]
	if err := checkHeaderSection(section); err != nil {
		return nil, nil, fmt.Errorf("header section: %w", err)
	}
	return section, after, nil
}

func validRef(r []byte) bool {
	if len(r) == 0 || len(r) > 64 {
		return false
	}
	for _, c := range r {
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

func validID(id string) error {
	if id == "" {
		return errors.New("job ID is empty")
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("job ID is %d bytes, the limit is %d", len(id), maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f || c == '|' || c == '{' || c == '}' {
			return fmt.Errorf("job ID %q has byte %q at %d: use printable ASCII without spaces, '|', '{' or '}'", preview([]byte(id)), c, i)
		}
	}
	return nil
}

// preview shortens bytes for error messages.
func preview(b []byte) string {
	const n = 48
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}
