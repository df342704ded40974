package cache

import (
	"errors"
	"fmt"
)

// Sentinel errors callers branch on. Errors returned by a Cache wrap them;
// test with errors.Is. Errors from the pool (pool.ErrUnavailable,
// pool.ErrLaneExhausted) and context errors are wrapped as they are, so
// errors.Is works for them too.
var (
	// ErrNotFound: the key is in neither tier (Get), or the loader said it
	// does not exist (GetOrLoad, possibly from a negative-cache entry).
	// Loaders return it (or an error wrapping it) for a missing key.
	ErrNotFound = errors.New("cache: not found")
	// ErrInvalid: bad input to a call: an empty key or one over
	// MaxKeyBytes, a TTL that is not positive, a nil loader or group.
	// Nothing was read or written.
	ErrInvalid = errors.New("cache: invalid argument")
	// ErrValueTooLarge: the encoded value is larger than Config.MaxValueBytes.
	// The concrete error is a *TooLargeError naming the key and the sizes.
	// Nothing was written.
	ErrValueTooLarge = errors.New("cache: value too large")
	// ErrCodec: the codec could not encode a value (nothing was written) or
	// decode what Redis holds. Get returns it for an undecodable value and
	// deletes that value; GetOrLoad treats one as a miss and loads.
	ErrCodec = errors.New("cache: codec")
	// ErrTooManyLoads: GetOrLoad found its key in neither tier while
	// Config.MaxLoads loads (or waits for another instance's load) were
	// already in progress. It fails at once; no loader was called and
	// nothing was written. The caller may retry later or do without.
	ErrTooManyLoads = errors.New("cache: too many loads in progress")
	// ErrInvalidConfig: New was given a bad Config, name or pool. Each
	// problem is an error naming the field, wrapping this one; all of them
	// are joined.
	ErrInvalidConfig = errors.New("cache: invalid config")
	// ErrAlreadyStarted: Start was called on a cache that was already
	// started.
	ErrAlreadyStarted = errors.New("cache: already started")
	// ErrStarted is the old name of ErrAlreadyStarted.
	//
	// Deprecated: use ErrAlreadyStarted, which it equals.
	ErrStarted = ErrAlreadyStarted
	// ErrClosed: the lifecycle group the cache was started on has closed.
	// From then on Get, GetOrLoad, Set and Delete fail with it at once,
	// touching neither the local tier nor Redis (a local hit does not serve:
	// with the subscriber stopped, nothing keeps the tier current), and
	// Start fails with it too. A cache that was never started never
	// returns it.
	ErrClosed = errors.New("cache: closed")
)

// TooLargeError is the error for a value over Config.MaxValueBytes. It
// matches ErrValueTooLarge.
type TooLargeError struct {
	Cache string // the cache's name
	Key   string
	Size  int // encoded size in bytes
	Max   int // Config.MaxValueBytes
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("cache %q: value for key %q is %d bytes encoded, over Config.MaxValueBytes %d; nothing was written",
		e.Cache, e.Key, e.Size, e.Max)
}

// Is makes a TooLargeError match ErrValueTooLarge.
func (e *TooLargeError) Is(target error) bool { return target == ErrValueTooLarge }
