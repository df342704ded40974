package queue

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// Adversarial review of job headers (issue 19): the encoder and the decoder
// agree on every header set the options accept, at the exact bounds and
// with every other flag of the element.

// headerSets are header sets the API accepts, at and around its bounds.
func headerSets() map[string]map[string]string {
	sets := map[string]map[string]string{}
	// 16 keys of 256 bytes, empty values: exactly MaxHeaderBytes of keys.
	longKeys := map[string]string{}
	for i := range MaxHeaders {
		k := fmt.Sprintf("%02d", i) + strings.Repeat("k", MaxHeaderKeyLen-2)
		longKeys[k] = ""
	}
	sets["16 keys of 256 bytes, 4 KiB"] = longKeys
	// 16 entries of exactly 4 KiB together, values carrying the section's
	// and the element's separators.
	sep := map[string]string{}
	per := MaxHeaderBytes / MaxHeaders
	for i := range MaxHeaders {
		k := fmt.Sprintf("k%02d", i)
		sep[k] = strings.Repeat("|:9:", per)[:per-len(k)]
	}
	sets["16 entries, 4 KiB, '|' and ':' in values"] = sep
	// One value of 4 KiB minus its key: the largest value.
	sets["one value of 4095 bytes"] = map[string]string{"v": strings.Repeat("x", MaxHeaderBytes-1)}
	// UTF-8 edge cases: the largest code points of each length, U+FFFD
	// itself, a BOM, line and paragraph separators, noncharacters, C1
	// controls (valid UTF-8, not ASCII controls).
	utf := map[string]string{
		"a": "\u007e\u0080\u07ff\u0800\uffff\U00010000\U0010ffff",
		"b": "\ufffd\ufeff\u2028\u2029\ufdd0",
		"c": "\u0085\u009f",
		"d": "",
		"e": "1:a0:",                 // looks like a section
		"f": "h|5|1:a0:",             // looks like the element's tail
		"g": "99999:",                // a length the decoder refuses as a prefix
		"~": strings.Repeat("é", 64), // the last printable ASCII key
		"!": "first printable key",
	}
	sets["UTF-8 edges and look-alikes"] = utf
	// A value of 4-byte runes filling the budget exactly.
	sets["4-byte runes to the byte"] = map[string]string{"r": strings.Repeat("\U0001F600", (MaxHeaderBytes-1)/4) + "xyz"}
	return sets
}

// TestHeadersEncodeDecodeAgreeAtTheBounds: every accepted header set, with
// every combination of the flags u, r, d and w, is accepted by prepare,
// decodes to the same map, re-encodes to the same bytes, and survives a
// retry and a recovery (the re-encodings the worker makes).
func TestHeadersEncodeDecodeAgreeAtTheBounds(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	now := time.UnixMilli(1764000000123)
	q := mustQueue(t, p, "hbound", Config{Now: func() time.Time { return now }})
	for name, h := range headerSets() {
		require.LessOrEqual(t, len(h), MaxHeaders, name)
		size := 0
		for k, v := range h {
			size += len(k) + len(v)
			require.NoError(t, CheckHeader(k, v), name)
		}
		require.LessOrEqual(t, size, MaxHeaderBytes, name)
		for flags := range 16 {
			unique, ref, deadline, window := flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0
			opts := []EnqueueOption{Headers(h)}
			if unique || window {
				opts = append(opts, ID("job-1"))
			}
			if window {
				opts = append(opts, UniqueFor(time.Minute))
			}
			if deadline {
				opts = append(opts, Deadline(now.Add(time.Hour)))
			}
			payload := []byte("p|1:a0:")
			if ref {
				payload = bytes.Repeat([]byte("|"), inlineMax+1)
			}
			what := fmt.Sprintf("%s, flags u=%v r=%v d=%v w=%v", name, unique, ref, deadline, window)
			pr, err := q.prepare(payload, opts)
			require.NoError(t, err, what)
			e, err := decodeEnvelope(pr.elem)
			require.NoError(t, err, what)
			require.Equal(t, h, headerMap(e.headers), what)
			require.Equal(t, unique || window, e.unique, what)
			require.Equal(t, ref, e.ref != "", what)
			require.Equal(t, deadline, !e.deadline.IsZero(), what)
			require.Equal(t, window, e.window > 0, what)
			if !ref {
				require.Equal(t, payload, e.payload, what)
			}
			require.Equal(t, pr.elem, e.encode(), what)
			next := e
			next.attempt, next.deliveries = e.maxAttempts-1, maxCount
			again, err := decodeEnvelope(next.encode())
			require.NoError(t, err, what)
			require.Equal(t, h, headerMap(again.headers), what)
		}
	}
}

// TestHeadersOneByteOverTheBounds: one byte or one entry more than the
// bounds is refused by the options, and by the decoder when a foreign
// producer writes it.
func TestHeadersOneByteOverTheBounds(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	q := mustQueue(t, p, "hover", Config{})
	over := map[string]map[string]string{
		"4097 bytes":         {"v": strings.Repeat("x", MaxHeaderBytes)},
		"key of 257 bytes":   {strings.Repeat("k", MaxHeaderKeyLen+1): ""},
		"a surrogate half":   {"k": "\xed\xa0\x80"},
		"an overlong slash":  {"k": "\xc0\xaf"},
		"past U+10FFFF":      {"k": "\xf4\x90\x80\x80"},
		"a cut 4-byte rune":  {"k": "\xf0\x9f\x98"},
		"a tab":              {"k": "a\tb"},
		"DEL in a key":       {"k\x7f": ""},
		"a space in a key":   {"k k": ""},
		"a 0xff byte in key": {"k\xff": ""},
	}
	for name, h := range over {
		_, err := q.prepare(nil, []EnqueueOption{Headers(h)})
		require.ErrorIs(t, err, ErrInvalidHeader, name)
		for k, v := range h {
			if name != "4097 bytes" { // CheckHeader checks one entry, not the job's total
				require.ErrorIs(t, CheckHeader(k, v), ErrInvalidHeader, name)
			}
			// The decoder refuses the same entry written by hand.
			sec := fmt.Sprintf("%d:%s%d:%s", len(k), k, len(v), v)
			_, err := decodeEnvelope(fmt.Appendf(nil, "bq1|id|0|1|0|5|0|h|%d|%s", len(sec), sec))
			require.ErrorIs(t, err, errMalformed, name)
		}
	}
}

// FuzzHeaderSectionCanonical feeds the decoder arbitrary header sections:
// whatever it accepts is exactly what the encoder writes for the map it
// decodes to (one spelling per header set), so a section never changes on
// a retry and two producers never disagree.
func FuzzHeaderSectionCanonical(f *testing.F) {
	f.Add([]byte("1:a0:"), []byte("p"))
	f.Add([]byte("1:a0:1:b2:é11:traceparent2:tp"), []byte(""))
	f.Add([]byte("3:a|b1:|"), []byte("x"))
	f.Add([]byte("01:a0:"), []byte("x"))
	f.Add([]byte("1:a00:"), []byte("x"))
	f.Add([]byte("1:b0:1:a0:"), []byte("x"))
	f.Fuzz(func(t *testing.T, section, payload []byte) {
		elem := fmt.Appendf(nil, "bq1|id|0|1|0|5|0|h|%d|%s%s", len(section), section, payload)
		e, err := decodeEnvelope(elem)
		if err != nil {
			return
		}
		m := headerMap(e.headers)
		require.NotEmpty(t, m)
		hs := make([]header, 0, len(m))
		for k, v := range m {
			require.NoError(t, CheckHeader(k, v))
			hs = append(hs, header{k, v})
		}
		again, err := encodeHeaders(hs)
		require.NoError(t, err, "a section the decoder accepts is one the encoder writes")
		require.Equal(t, string(section), string(again))
		require.Equal(t, string(payload), string(e.payload))
		require.True(t, utf8.Valid(section))
	})
}

// TestJobHeadersAreTheRunsOwn: the map a handler gets shares nothing with
// the fetched element (kept past the run, it does not change when the
// buffer it was decoded from is reused) nor with another run.
func TestJobHeadersAreTheRunsOwn(t *testing.T) {
	hs, err := encodeHeaders([]header{{"traceparent", testTraceparent}, {"t", "1"}})
	require.NoError(t, err)
	e := envelope{id: "j", maxAttempts: 1, enqueuedAt: time.UnixMilli(0), headers: hs, payload: []byte("p")}
	buf := e.encode()
	d, err := decodeEnvelope(buf)
	require.NoError(t, err)
	m1, m2 := headerMap(d.headers), headerMap(d.headers)
	want := maps.Clone(m1)
	for i := range buf {
		buf[i] = 'X'
	}
	m2["t"] = "changed"
	require.Equal(t, want, m1)
}

// TestHeadersDebounceReplace: a debounced job that replaces an earlier one
// carries the later enqueue's headers (the job is replaced, not merged).
func TestHeadersDebounceReplace(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "hdeb", Config{})
	_, err := q.Enqueue(ctx, []byte("a"), ID("d1"), Debounce(), Delay(time.Hour), Header("req", "1"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("b"), ID("d1"), Debounce(), Delay(time.Hour), Header("req", "2"))
	require.NoError(t, err)
	zs, err := p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, zs, 1)
	e, err := decodeEnvelope([]byte(zs[0]))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"req": "2"}, headerMap(e.headers))
	require.Equal(t, "b", string(e.payload))
}
