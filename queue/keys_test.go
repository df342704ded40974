package queue

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// Two different (namespace, queue) pairs never share a key: (a, b:c) and
// (a:b, c) used to map to the same hash tag {a:b:c}, so each saw the
// other's consumers as dead and swept their running jobs (issue 13 item 4).
// A ':' in the namespace is refused; queue names keep their ':'.
func TestKeysAreInjective(t *testing.T) {
	p := miniPool(t, pool.Config{})
	_, err := New(p, "b:c", Config{Namespace: "a"})
	require.NoError(t, err, "a ':' in a queue name stays allowed")
	_, err = New(p, "c", Config{Namespace: "a:b"})
	require.ErrorContains(t, err, `queue: invalid config: Config.Namespace "a:b" must not contain ':'`)

	// Every pair New accepts has keys of its own.
	tags := map[string][2]string{}
	for _, ns := range []string{"a", "ab", "a-b", "bq"} {
		for _, name := range []string{"b", "b:c", "c", ":c", "c:", "b::c", "heartbeats"} {
			q, err := New(p, name, Config{Namespace: ns})
			require.NoError(t, err)
			if other, ok := tags[q.k.tag]; ok {
				t.Fatalf("(%q, %q) and (%q, %q) share the tag %s", ns, name, other[0], other[1], q.k.tag)
			}
			tags[q.k.tag] = [2]string{ns, name}
			require.NotEqual(t, heartbeatKey(ns), q.k.ready)
			for _, other := range []string{"a", "ab", "a-b", "bq"} {
				require.NotContains(t, []string{q.k.ready, q.k.delayed, q.k.wake, q.k.deadIdx, q.k.deadData, q.k.consumers, q.k.sweepLock}, heartbeatKey(other))
			}
		}
	}
}
