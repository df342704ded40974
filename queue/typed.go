package queue

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
)

// Job types, and handlers and producers that speak JSON instead of bytes.

// MaxTypeLen is the longest job type, in bytes.
const MaxTypeLen = 128

// Type gives the job a type ("email.send"), which a Mux routes on and
// handlers read as Job.Type. typ is 1 to MaxTypeLen bytes of printable
// ASCII without spaces. The type travels with the job in its element:
// through retries, recovery, the dead letters and Requeue. A job without
// a type costs nothing more.
//
// Workers of versions before job types dead-letter a job with a type as
// malformed: upgrade workers first (docs/queue.md, "Upgrading").
func Type(typ string) EnqueueOption {
	err := checkType(typ)
	return func(o *enqueueOpts) error {
		if err != nil {
			return err
		}
		o.typ = typ
		return nil
	}
}

// checkType reports what is wrong with a job type: nil, or an error that
// names it.
func checkType(typ string) error {
	if typ == "" {
		return errors.New(`queue: Type(""): a job type must not be empty`)
	}
	if len(typ) > MaxTypeLen {
		return fmt.Errorf("queue: Type(%q): %d bytes, the limit is %d (MaxTypeLen)", preview([]byte(typ)), len(typ), MaxTypeLen)
	}
	for i := 0; i < len(typ); i++ {
		if c := typ[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("queue: Type(%q): byte %q at %d: use printable ASCII without spaces", preview([]byte(typ)), typ[i:i+1], i)
		}
	}
	return nil
}

// cutTypeField cuts "<length>|<type>" off the front of rest (flag "t") and
// checks the type.
func cutTypeField(rest []byte) (typ string, after []byte, err error) {
	j := bytes.IndexByte(rest, '|')
	if j < 1 || j > 3 || rest[0] == '0' || rest[0] == '+' || rest[0] == '-' {
		return "", nil, fmt.Errorf("type length %q", preview(rest))
	}
	n, err := strconv.Atoi(string(rest[:j]))
	if err != nil || n < 1 || n > MaxTypeLen || n > len(rest)-j-1 {
		return "", nil, fmt.Errorf("type length %q out of range", preview(rest[:j]))
	}
	t := rest[j+1 : j+1+n]
	for i, c := range t {
		if c <= ' ' || c >= 0x7f {
			return "", nil, fmt.Errorf("type %q has byte %q at %d", preview(t), t[i:i+1], i)
		}
	}
	return string(t), rest[j+1+n:], nil
}

// ErrDecode is wrapped by the error of a handler made by HandleJSON when
// a job's payload does not decode: the message names the job, its type
// and the Go type it was decoded into. The error is Permanent: the job
// goes to the dead letters, as retrying cannot help.
var ErrDecode = errors.New("queue: cannot decode the job's payload")

// HandleJSON returns a Handler that decodes each job's payload as JSON
// into a fresh T and calls f with it. A payload that does not decode
// fails the run with Permanent(err), err wrapping ErrDecode and naming
// the job's ID and type and T; f is not called. f's own errors are
// returned as they are (a plain error retries the job). HandleJSON panics
// when T is one no JSON decodes into (an interface with methods, a
// channel, a func): a mistake in the program's wiring, found when it
// starts rather than by every job going to the dead letters.
func HandleJSON[T any](f func(ctx context.Context, job *Job, v T) error) Handler {
	if f == nil {
		panic("queue: HandleJSON(nil)")
	}
	into := reflect.TypeFor[T]().String()
	if !decodable(reflect.TypeFor[T]()) {
		panic(fmt.Sprintf("queue: HandleJSON: no JSON payload decodes into %s (an interface with methods, a channel, a func or a complex number): every job would fail with ErrDecode", into))
	}
	return func(ctx context.Context, job *Job) error {
		var v T
		if err := json.Unmarshal(job.Payload, &v); err != nil {
			return Permanent(decodeError(job, into, err))
		}
		return f(ctx, job, v)
	}
}

// decodable reports whether encoding/json can decode a payload other
// than null into a fresh value of t: not when t is, under its pointers, an
// interface with methods (the value is a nil interface json cannot fill),
// a channel, a func or a complex number, unless it decodes itself.
func decodable(t reflect.Type) bool {
	unmarshaler := reflect.TypeFor[json.Unmarshaler]()
	text := reflect.TypeFor[encoding.TextUnmarshaler]()
	for {
		if t.Kind() == reflect.Interface {
			return t.NumMethod() == 0
		}
		if p := reflect.PointerTo(t); p.Implements(unmarshaler) || p.Implements(text) {
			return true
		}
		if t.Kind() != reflect.Pointer {
			break
		}
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer:
		return false
	}
	return true
}

func decodeError(job *Job, into string, err error) error {
	if job.Type != "" {
		return fmt.Errorf("%w: job %s of type %q into %s: %w", ErrDecode, job.ID, job.Type, into, err)
	}
	return fmt.Errorf("%w: job %s into %s: %w", ErrDecode, job.ID, into, err)
}

// EnqueueJSON enqueues v encoded as JSON (q.Enqueue with the same options
// and errors). A v that does not encode fails before anything is sent,
// with an error naming its Go type.
func EnqueueJSON[T any](ctx context.Context, q *Queue, v T, opts ...EnqueueOption) (string, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return "", q.errorf("enqueue: encoding %s as JSON: %w", reflect.TypeFor[T](), err)
	}
	return q.Enqueue(ctx, payload, opts...)
}

// JobType is the Type option of every occurrence of a schedule. An
// occurrence runs with the type of the definition registered when it
// runs (as with its payload): one enqueued by an earlier version without
// the type runs with it too (see docs/queue.md, "Upgrading").
func JobType(typ string) ScheduleOption {
	err := checkType(typ)
	return func(s *scheduleDef) error {
		if err != nil {
			return err
		}
		s.Type = typ
		return nil
	}
}
