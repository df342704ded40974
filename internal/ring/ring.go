// Package ring is a generic fixed-capacity ring buffer: the shape every
// history in bounded takes, so none can grow without bound.
package ring

import "fmt"

// Ring holds the most recent Cap() values pushed into it; pushing into a full
// ring overwrites the oldest value.
//
// The zero value has capacity 0 and drops everything; use New. A Ring is not
// safe for concurrent use: its owner guards it.
type Ring[T any] struct {
	buf   []T
	start int // index of the oldest value
	n     int // number of values held
}

// New returns an empty ring of the given capacity. It panics if capacity is
// negative: callers validate configuration before they build one.
func New[T any](capacity int) *Ring[T] {
	if capacity < 0 {
		panic(fmt.Sprintf("ring: negative capacity %d", capacity))
	}
	return &Ring[T]{buf: make([]T, capacity)}
}

// Push appends v, overwriting the oldest value when the ring is full. It
// reports whether a value was overwritten.
func (r *Ring[T]) Push(v T) (overwrote bool) {
	if len(r.buf) == 0 {
		return true
	}
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = v
		r.n++
		return false
	}
	r.buf[r.start] = v
	r.start = (r.start + 1) % len(r.buf)
	return true
}

// Len returns the number of values held.
func (r *Ring[T]) Len() int { return r.n }

// Cap returns the capacity.
func (r *Ring[T]) Cap() int { return len(r.buf) }

// At returns the i-th oldest value held; it panics if i is out of range.
func (r *Ring[T]) At(i int) T {
	if i < 0 || i >= r.n {
		panic(fmt.Sprintf("ring: index %d out of range [0,%d)", i, r.n))
	}
	return r.buf[(r.start+i)%len(r.buf)]
}

// Last returns the newest value, or false when the ring is empty.
func (r *Ring[T]) Last() (T, bool) {
	if r.n == 0 {
		var zero T
		return zero, false
	}
	return r.At(r.n - 1), true
}

// AppendTo appends the values held, oldest first, to dst and returns it.
func (r *Ring[T]) AppendTo(dst []T) []T {
	if r.n == 0 {
		return dst
	}
	end := r.start + r.n
	if end <= len(r.buf) {
		return append(dst, r.buf[r.start:end]...)
	}
	dst = append(dst, r.buf[r.start:]...)
	return append(dst, r.buf[:end-len(r.buf)]...)
}

// Slice returns a copy of the values held, oldest first.
func (r *Ring[T]) Slice() []T { return r.AppendTo(make([]T, 0, r.n)) }

// Reset empties the ring, keeping its capacity.
func (r *Ring[T]) Reset() {
	clear(r.buf)
	r.start, r.n = 0, 0
}
