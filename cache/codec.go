package cache

import (
	"encoding/json"
	"fmt"
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
)

// encode encodes v behind the kind byte and enforces the size limit. It
// returns the bytes for Redis and the codec's size (what the limit and the
// local tier's byte bound count).
func (c *Cache[V]) encode(key string, v V) ([]byte, error) {
	b, err := c.codec.Encode(v)
	if err != nil {
		return nil, fmt.Errorf("%w: cache %q: encoding the value for key %q: %w; nothing was written", ErrCodec, c.name, key, err)
	}
	if len(b) > c.cfg.MaxValueBytes {
		return nil, &TooLargeError{Cache: c.name, Key: key, Size: len(b), Max: c.cfg.MaxValueBytes}
	}
	out := make([]byte, 1+len(b))
	out[0] = kindValue
	copy(out[1:], b)
	return out, nil
}

// notFoundMarker is the whole Redis value of a negative-cache entry.
const notFoundMarker = "\x02"

// decode reads what Redis holds for key. notFound reports a negative-cache
// entry.
func (c *Cache[V]) decode(key string, data []byte) (v V, notFound bool, err error) {
	if len(data) == 0 {
		return v, false, fmt.Errorf("%w: cache %q: key %q holds an empty value, not one this package wrote", ErrCodec, c.name, key)
	}
	switch data[0] {
	case kindValue:
		if err := c.codec.Decode(data[1:], &v); err != nil {
			return v, false, fmt.Errorf("%w: cache %q: decoding the value of key %q: %w", ErrCodec, c.name, key, err)
		}
		return v, false, nil
	case kindNotFound:
		return v, true, nil
	}
	return v, false, fmt.Errorf("%w: cache %q: key %q holds a value of unknown kind %d, not one this package wrote", ErrCodec, c.name, key, data[0])
}
