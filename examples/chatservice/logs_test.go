package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
)

// TestLogsHaveNoDuplicateKeys: every record the service and its components
// write names each key once. The queue's worker adds queue=<name> itself,
// and a cache adds cache=<name>: a logger handed to them that already
// carries the key printed it twice (queue=chat queue=chat).
func TestLogsHaveNoDuplicateKeys(t *testing.T) {
	m := redistest.Mini(t)
	logs := tu.NewLogs()
	h := startService(t, "redis://"+m.Addr(), func(c *Config) {
		c.FailRate = 1 // every attempt fails: the worker logs retries and the dead letter
		c.Logger = logs.Logger()
	})
	id := h.post("ada", "assistant", "this model never answers")
	require.Equal(t, chatapi.StatusFailed, h.reply(id).Status)
	h.close()

	byKey := map[string]int{}
	for _, r := range logs.Records() {
		require.Empty(t, r.Duplicates(), "record with a duplicated key: %s", r)
		for _, k := range r.Keys() {
			byKey[k]++
		}
	}
	require.NotZero(t, byKey["queue"], "no record named its queue: the test saw no worker log")
}
