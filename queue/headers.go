package queue

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Job headers: a small map of strings that travels with a job (a trace
// context, a request ID, a tenant), set with the Header and Headers options
// and read by handlers as Job.Headers.

// The bounds of one job's headers.
const (
	MaxHeaders      = 16      // entries
	MaxHeaderBytes  = 4 << 10 // keys and values together
	MaxHeaderKeyLen = 256     // bytes of one key
)

// ErrInvalidHeader: a Header, Headers or JobHeaders option got a key or
// value it refuses, or the job's headers exceed MaxHeaders or
// MaxHeaderBytes. The message names the entry. Nothing was enqueued.
var ErrInvalidHeader = errors.New("queue: invalid job header")

// header is one entry, as the options collect them.
type header struct{ k, v string }

// Header sets the job's header key to value (a later option setting the
// same key wins). key is 1 to 256 bytes of printable ASCII without spaces;
// value is valid UTF-8 without control characters, and may be empty. A job
// holds at most MaxHeaders entries of at most MaxHeaderBytes together.
//
// Headers cost nothing for jobs that have none; a job that has them carries
// them in its element, through retries, recovery, the dead letters and
// Requeue.
func Header(key, value string) EnqueueOption {
	err := checkHeader(key, value)
	return func(o *enqueueOpts) error {
		if err != nil {
			return err
		}
		o.headers = append(o.headers, header{key, value})
		return nil
	}
}

// Headers sets every entry of h as a header of the job (see Header for the
// rules). h is read when Headers is called: later changes to it do not
// reach the job.
func Headers(h map[string]string) EnqueueOption {
	hs, err := collectHeaders(h)
	return func(o *enqueueOpts) error {
		if err != nil {
			return err
		}
		o.headers = append(o.headers, hs...)
		return nil
	}
}

// collectHeaders validates h and returns its entries, sorted by key.
func collectHeaders(h map[string]string) ([]header, error) {
	if len(h) > MaxHeaders {
		return nil, fmt.Errorf("%w: %d entries, the limit is %d", ErrInvalidHeader, len(h), MaxHeaders)
	}
	hs := make([]header, 0, len(h))
	for k, v := range h {
		if err := checkHeader(k, v); err != nil {
			return nil, err
		}
		hs = append(hs, header{k, v})
	}
	slices.SortFunc(hs, func(a, b header) int { return cmp.Compare(a.k, b.k) })
	return hs, nil
}

// CheckHeader reports whether the Header option accepts key and value:
// nil, or an error wrapping ErrInvalidHeader that says why. Middleware that
// adds headers of its own (a trace context) can leave out what the queue
// would refuse instead of failing the enqueue.
func CheckHeader(key, value string) error { return checkHeader(key, value) }

// checkHeader checks one entry; it allocates nothing on success, except
// for a value that is not ASCII given as a string.
func checkHeader[T string | []byte](k, v T) error {
	if err := checkHeaderKey(k); err != nil {
		return err
	}
	return checkHeaderValue(k, v)
}

func checkHeaderKey[T string | []byte](k T) error {
	if len(k) == 0 {
		return fmt.Errorf("%w: empty key", ErrInvalidHeader)
	}
	if len(k) > MaxHeaderKeyLen {
		return fmt.Errorf("%w: key %q is %d bytes, the limit is %d", ErrInvalidHeader, preview([]byte(k)), len(k), MaxHeaderKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%w: key %q has byte %q at %d: use printable ASCII without spaces", ErrInvalidHeader, preview([]byte(k)), c, i)
		}
	}
	return nil
}

func checkHeaderValue[T string | []byte](k, v T) error {
	ascii := true
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < ' ' || c == 0x7f {
			return fmt.Errorf("%w: the value of %q has control character %q at %d", ErrInvalidHeader, preview([]byte(k)), c, i)
		}
		ascii = ascii && c < utf8.RuneSelf
	}
	if !ascii && !utf8.Valid([]byte(v)) {
		return fmt.Errorf("%w: the value of %q is not valid UTF-8", ErrInvalidHeader, preview([]byte(k)))
	}
	return nil
}

// The header section of an envelope (flag "h"), the entries sorted by key,
// each key once:
//
//	<key length>:<key><value length>:<value>...
//
// Lengths are decimal without leading zeros. The element holds the
// section's length, '|', then the section (see envelope).

// maxHeaderSection bounds a section's length: the bytes of the entries and
// their length prefixes.
const maxHeaderSection = MaxHeaderBytes + MaxHeaders*len("4096:4096:")

// encodeHeaders returns the section of the headers hs, in the order the
// options set them (a later entry for a key wins); nil for none.
func encodeHeaders(hs []header) ([]byte, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	hs = slices.Clone(hs)
	// Stable: of the entries for one key, the last set stays last.
	slices.SortStableFunc(hs, func(a, b header) int { return cmp.Compare(a.k, b.k) })
	kept := hs[:0]
	for i, h := range hs {
		if i+1 < len(hs) && hs[i+1].k == h.k {
			continue
		}
		kept = append(kept, h)
	}
	if len(kept) > MaxHeaders {
		return nil, fmt.Errorf("%w: %d entries, the limit is %d", ErrInvalidHeader, len(kept), MaxHeaders)
	}
	size := 0
	for _, h := range kept {
		size += len(h.k) + len(h.v)
	}
	if size > MaxHeaderBytes {
		return nil, fmt.Errorf("%w: keys and values are %d bytes, the limit is %d (MaxHeaderBytes)", ErrInvalidHeader, size, MaxHeaderBytes)
	}
	b := make([]byte, 0, size+len(kept)*8)
	for _, h := range kept {
		b = strconv.AppendInt(b, int64(len(h.k)), 10)
		b = append(b, ':')
		b = append(b, h.k...)
		b = strconv.AppendInt(b, int64(len(h.v)), 10)
		b = append(b, ':')
		b = append(b, h.v...)
	}
	return b, nil
}

// checkHeaderSection reports what is wrong with a section decoded from an
// element: it holds 1 to MaxHeaders entries, keys valid and ascending,
// values valid, MaxHeaderBytes at most. It allocates nothing on success.
func checkHeaderSection(s []byte) error {
	n, size := 0, 0
	var prev []byte
	for len(s) > 0 {
		k, rest, err := cutLenPrefixed(s)
		if err != nil {
			return fmt.Errorf("header %d: key: %w", n, err)
		}
		v, rest, err := cutLenPrefixed(rest)
		if err != nil {
			return fmt.Errorf("header %d: value: %w", n, err)
		}
		s = rest
		if n++; n > MaxHeaders {
			return fmt.Errorf("more than %d headers", MaxHeaders)
		}
		if size += len(k) + len(v); size > MaxHeaderBytes {
			return fmt.Errorf("headers over %d bytes", MaxHeaderBytes)
		}
		if err := checkHeader(k, v); err != nil {
			return err
		}
		if prev != nil && string(prev) >= string(k) {
			return fmt.Errorf("header %q follows %q: keys must be distinct and sorted", preview(k), preview(prev))
		}
		prev = k
	}
	if n == 0 {
		return errors.New("empty header section")
	}
	return nil
}

// cutLenPrefixed cuts "<n>:<n bytes>" off the front of s.
func cutLenPrefixed[T string | []byte](s T) (field, rest T, err error) {
	n, i := 0, 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if i == 1 && s[0] == '0' || i == 5 {
			return field, rest, fmt.Errorf("bad length %q", preview([]byte(s)))
		}
		n = n*10 + int(s[i]-'0')
	}
	if i == 0 || i >= len(s) || s[i] != ':' {
		return field, rest, fmt.Errorf("bad length %q", preview([]byte(s)))
	}
	s = s[i+1:]
	if n > len(s) {
		return field, rest, fmt.Errorf("length %d past the section's end", n)
	}
	return s[:n], s[n:], nil
}

// headerMap returns the headers of a section checked by
// checkHeaderSection, in a new map; nil for an empty section. Its keys and
// values share one string: two allocations and the map's.
func headerMap(section []byte) map[string]string {
	if len(section) == 0 {
		return nil
	}
	s := string(section)
	m := make(map[string]string, 8) // one group of slots: MaxHeaders is 16
	for len(s) > 0 {
		k, rest, _ := cutLenPrefixed(s)
		v, rest, _ := cutLenPrefixed(rest)
		m[k] = v
		s = rest
	}
	return m
}
