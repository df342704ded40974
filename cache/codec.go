package cache

import (
	"encoding/json"
	"fmt"
	"time"
)

// Codec turns values into bytes for the Redis tier and back. The local tier
// holds values as they are and never calls it on a hit.
//
// Implementations must be safe for concurrent use. Decode owns data: it may
// keep it (the raw []byte codec returns it as the value).
type Codec[V any] interface {
	Encode(v V) ([]byte, error)
	Decode(data []byte, v *V) error
}

// JSON is the default codec: encoding/json. Its zero value is ready to use.
type JSON[V any] struct{}

// Encode implements Codec.
func (JSON[V]) Encode(v V) ([]byte, error) { return json.Marshal(v) }

// Decode implements Codec.
func (JSON[V]) Decode(data []byte, v *V) error { return json.Unmarshal(data, v) }

// rawBytes stores a []byte as it is.
type rawBytes struct{}

func (rawBytes) Encode(v []byte) ([]byte, error) { return v, nil }

func (rawBytes) Decode(data []byte, v *[]byte) error { *v = data; return nil }

// rawString stores a string as its bytes.
type rawString struct{}

func (rawString) Encode(v string) ([]byte, error) { return []byte(v), nil }

func (rawString) Decode(data []byte, v *string) error { *v = string(data); return nil }

// defaultCodec is the raw fast path for []byte and string and JSON for
// everything else. Named types (type Blob []byte) get JSON: their methods may
// say how they want to be encoded.
func defaultCodec[V any]() Codec[V] {
	var zero V
	switch any(zero).(type) {
	case []byte:
		return any(rawBytes{}).(Codec[V])
	case string:
		return any(rawString{}).(Codec[V])
	}
	return JSON[V]{}
}

// A value in Redis is one kind byte followed by the codec's bytes. The kind
// byte is what lets a negative-cache entry exist next to values whose
// encoding can be anything (raw []byte), and leaves room for a new format.
const (
	kindValue    byte = 1
	kindNotFound byte = 2
	// kindStamped is a value written with Config.RefreshAfter: the kind
	// byte, then its refresh stamp (refresh.go), then the codec's bytes.
	kindStamped byte = 3
)

// encoded is one key's answer ready for both tiers: v for the local tier,
// data (the kind byte and the codec's bytes) for Redis. A negative-cache
// entry has notFound set, the zero v and notFoundMarker as its data. The
// local tier counts len(data) toward its byte bound.
type encoded[V any] struct {
	v        V
	notFound bool
	data     []byte
	// staleBelow is the refresh stamp of a kindStamped value: once its
	// Redis TTL is down to this, it is due for a refresh. Zero: never.
	staleBelow time.Duration
}

// notFoundMarker is the whole Redis value of a negative-cache entry.
const notFoundMarker = "\x02"

// negative returns the negative-cache entry.
func negative[V any]() encoded[V] {
	return encoded[V]{notFound: true, data: []byte(notFoundMarker)}
}

// encode encodes v behind the kind byte and enforces Config.MaxValueBytes
// on the codec's bytes.
func (c *Cache[V]) encode(key string, v V) (encoded[V], error) {
	b, err := c.codec.Encode(v)
	if err != nil {
		return encoded[V]{}, fmt.Errorf("%w: cache %q: encoding the value for key %q: %w; nothing was written", ErrCodec, c.name, key, err)
	}
	if len(b) > c.cfg.MaxValueBytes {
		return encoded[V]{}, &TooLargeError{Cache: c.name, Key: key, Size: len(b), Max: c.cfg.MaxValueBytes}
	}
	if c.cfg.RefreshAfter > 0 {
		// The stamp is filled in by stamp, once the TTL is known.
		data := make([]byte, stampedHeader+len(b))
		data[0] = kindStamped
		copy(data[stampedHeader:], b)
		return encoded[V]{v: v, data: data}, nil
	}
	data := make([]byte, 1+len(b))
	data[0] = kindValue
	copy(data[1:], b)
	return encoded[V]{v: v, data: data}, nil
}

// decode reads what Redis holds for key.
func (c *Cache[V]) decode(key string, data []byte) (encoded[V], error) {
	if len(data) == 0 {
		return encoded[V]{data: data}, fmt.Errorf("%w: cache %q: key %q holds an empty value, not one this package wrote", ErrCodec, c.name, key)
	}
	var staleBelow time.Duration
	if data[0] == kindStamped {
		var ok bool
		if staleBelow, ok = readStamp(data); !ok {
			return encoded[V]{data: data}, fmt.Errorf("%w: cache %q: key %q holds a stamped value of %d bytes, too short for its stamp", ErrCodec, c.name, key, len(data))
		}
	}
	switch data[0] {
	case kindValue, kindStamped:
		// Into v, not into an encoded's field: &v escapes to the codec, and
		// only v should go to the heap, not the whole encoded.
		var v V
		if err := c.codec.Decode(data[headerLen(data[0]):], &v); err != nil {
			// Not v: a partly decoded value must not reach a caller.
			return encoded[V]{data: data}, fmt.Errorf("%w: cache %q: decoding the value of key %q: %w", ErrCodec, c.name, key, err)
		}
		return encoded[V]{v: v, data: data, staleBelow: staleBelow}, nil
	case kindNotFound:
		return encoded[V]{notFound: true, data: data}, nil
	}
	return encoded[V]{data: data}, fmt.Errorf("%w: cache %q: key %q holds a value of unknown kind %d, not one this package wrote", ErrCodec, c.name, key, data[0])
}
