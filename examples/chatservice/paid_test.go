package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/queue"
)

// Paying users' chats, posted behind a backlog of other users' chats, run
// at the next free chat handlers, before the rest of the backlog (strict
// priority: with equal priorities they would alternate with it). The chat
// queue and the paid lane share one handler here.
func TestPaidLane(t *testing.T) {
	h := startService(t, "redis://"+redistest.Server(t).Addr(), func(c *Config) {
		c.Concurrency, c.Latency, c.FailRate, c.NoShedding = 1, 20*time.Millisecond, 0, true
		c.PaidUsers = []string{"payer"}
	})
	const backlog = 8
	free := make([]string, backlog)
	for i := range free {
		free[i] = h.post("free", "assistant", "hi")
	}
	require.Eventually(t, func() bool { return h.s.chatRunning.Load() == 1 }, wait, time.Millisecond, "the backlog runs")
	const paidChats = 4
	ids := make([]string, paidChats)
	for i := range ids {
		ids[i] = h.post("payer", "assistant", "hi")
	}
	var paid chatapi.Reply // the last one done
	for _, id := range ids {
		r := h.reply(id)
		require.Equal(t, chatapi.StatusDone, r.Status)
		if r.DoneAt.After(paid.DoneAt) {
			paid = r
		}
	}

	var before int
	for _, id := range free {
		if r := h.reply(id); r.DoneAt.Before(paid.DoneAt) {
			before++
		}
	}
	// One chat ran when the paid ones came; at most one more was already
	// on its way to the handler.
	require.LessOrEqual(t, before, 2, "free chats done before the last paid one, of %d", backlog)

	require.Eventually(t, func() bool { return h.s.chatSlots.Stats() == queue.SlotStats{Size: 1, Free: 1} }, wait, time.Millisecond,
		"one chat handler, shared, free again")
	d := h.debug()
	require.EqualValues(t, paidChats, d.Queues[chatapi.QueueChatPaid].Local.Processed)
	require.EqualValues(t, backlog, d.Queues[chatapi.QueueChat].Local.Processed)
	require.Equal(t, 1, h.s.p.Stats().Blocking.Reserved-1, "one blocking connection for the four queues, besides the agents cache's subscriber")
}
