package testutil

import (
	"log/slog"
	"testing"
)

func TestLogsFindsDuplicates(t *testing.T) {
	l := NewLogs()
	log := l.Logger().With("queue", "chat")
	log.With("queue", "chat").Warn("twice", "err", "x")
	log.Info("once", slog.Group("g", "queue", "other"))
	log.Info("msg key", "msg", "shadowed")
	rs := l.Records()
	if len(rs) != 3 {
		t.Fatalf("%d records, want 3", len(rs))
	}
	if d := rs[0].Duplicates(); len(d) != 1 || d[0] != "queue" {
		t.Fatalf("duplicates of %s: %v, want [queue]", rs[0], d)
	}
	if d := rs[1].Duplicates(); len(d) != 0 {
		t.Fatalf("duplicates of %s: %v, want none (g.queue is another key)", rs[1], d)
	}
	if d := rs[2].Duplicates(); len(d) != 1 || d[0] != "msg" {
		t.Fatalf("duplicates of %s: %v, want [msg]", rs[2], d)
	}
}
