package cache

import "encoding/binary"

// An invalidation message is
//
//	'I' op(1) instance-id(8, big endian) [uvarint len, key]...
//
// op 'k' lists keys whose local copies must go after a Set or a Delete (a
// GetOrLoad that starts after it must not join a load already running,
// which may have read the data before the change); op 'l' lists keys a load
// just filled (local copies go, loads already running are fine); op 'f'
// says "drop everything". A message never exceeds
// maxMessageBytes: a Delete of many keys is split into several. A key too
// long for one would be covered by a flush, but the cache refuses such keys
// (MaxKeyBytes), so only a message from elsewhere can ask for one.
const (
	msgMagic        = 'I'
	opKeys          = 'k'
	opLoaded        = 'l'
	opFlush         = 'f'
	msgHeader       = 10
	maxMessageBytes = 16 << 10
)

// keyMessages encodes keys under op (opKeys or opLoaded).
func keyMessages(id uint64, op byte, keys []string) []string {
	var msgs []string
	var b []byte
	flush := false
	header := func(op byte) []byte {
		h := make([]byte, msgHeader, msgHeader+64)
		h[0], h[1] = msgMagic, op
		binary.BigEndian.PutUint64(h[2:], id)
		return h
	}
	for _, k := range keys {
		need := binary.MaxVarintLen64 + len(k)
		if msgHeader+need > maxMessageBytes {
			flush = true
			continue
		}
		if b != nil && len(b)+need > maxMessageBytes {
			msgs = append(msgs, string(b))
			b = nil
		}
		if b == nil {
			b = header(op)
		}
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	if b != nil {
		msgs = append(msgs, string(b))
	}
	if flush {
		msgs = append(msgs, string(header(opFlush)))
	}
	return msgs
}

// parseInvalidation reads a message's header; keys holds the encoded keys.
func parseInvalidation(p string) (from uint64, op byte, keys string, ok bool) {
	if len(p) < msgHeader || p[0] != msgMagic || (p[1] != opKeys && p[1] != opLoaded && p[1] != opFlush) {
		return 0, 0, "", false
	}
	return binary.BigEndian.Uint64([]byte(p[2:msgHeader])), p[1], p[msgHeader:], true
}

// nextKey splits the first key off keys.
func nextKey(keys string) (key, rest string, ok bool) {
	var n uint64
	var shift uint
	for i := 0; i < len(keys) && i < binary.MaxVarintLen64; i++ {
		b := keys[i]
		n |= uint64(b&0x7f) << shift
		if b < 0x80 {
			start := i + 1
			if n > uint64(len(keys)-start) {
				return "", "", false
			}
			end := start + int(n)
			return keys[start:end], keys[end:], true
		}
		shift += 7
	}
	return "", "", false
}
