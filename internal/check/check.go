// Package check is the one way the bounded packages fill and validate their
// configs and names.
//
// Every package exports an ErrInvalidConfig sentinel; each problem New (or
// Start) finds is reported as an error wrapping it and naming the field, and
// all problems of one config are joined, so a caller sees every mistake at
// once and can still match errors.Is(err, pkg.ErrInvalidConfig). The
// pattern:
//
//	func (c Config) withDefaults() (Config, error) {
//		e := check.New(ErrInvalidConfig)
//		check.Default(e, &c.MaxLen, DefaultMaxLen, "Config.MaxLen")
//		if c.X > limit {
//			e.Addf("Config.X must be at most %d, got %d", limit, c.X)
//		}
//		return c, e.Err()
//	}
package check

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Errors collects the problems of one config. The zero value is not
// usable: make one with New.
type Errors struct {
	sentinel error
	errs     []error
}

// New returns an empty collection whose errors wrap sentinel.
func New(sentinel error) *Errors { return &Errors{sentinel: sentinel} }

// Addf records one problem, formatted as fmt.Errorf does (%w allowed).
func (e *Errors) Addf(format string, args ...any) {
	e.errs = append(e.errs, fmt.Errorf("%w: %w", e.sentinel, fmt.Errorf(format, args...)))
}

// Add records err, if it is not nil, wrapped in the sentinel.
func (e *Errors) Add(err error) {
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%w: %w", e.sentinel, err))
	}
}

// Err returns nil if nothing was recorded, else every problem joined.
func (e *Errors) Err() error { return errors.Join(e.errs...) }

// Number is what Default fills.
type Number interface {
	~int | ~int64 | ~float64
}

// Default sets *v to def when it is zero and records a problem when it is
// negative: the rule of every count, size and duration field whose zero
// value means "the default".
func Default[T Number](e *Errors, v *T, def T, field string) {
	switch {
	case *v == 0:
		*v = def
	case *v < 0:
		e.Addf("%s must not be negative, got %s", field, show(*v))
	}
}

func show[T Number](v T) string {
	if d, ok := any(v).(time.Duration); ok {
		return d.String()
	}
	return fmt.Sprint(v)
}

// MaxNameBytes is the longest name Name accepts.
const MaxNameBytes = 100

// Name checks a name that becomes part of Redis keys, usually their Redis
// Cluster hash tag ({name}): not empty, at most MaxNameBytes, no '{' or '}'
// (they would end the hash tag early and scatter the keys over slots), and
// no spaces or control characters, Unicode ones included (they make keys
// unreadable in redis-cli and logs). what names the field in the error, e.g. "Config.Namespace".
func Name(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s must not be empty", what)
	case len(s) > MaxNameBytes:
		return fmt.Errorf("%s %q is %d bytes, the limit is %d", what, s[:20]+"...", len(s), MaxNameBytes)
	case strings.ContainsAny(s, "{}"):
		return fmt.Errorf("%s %q must not contain '{' or '}' (they delimit the Redis Cluster hash tag)", what, s)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%s %q must not contain spaces or control characters", what, s)
		}
	}
	return nil
}
