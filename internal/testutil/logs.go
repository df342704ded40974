package testutil

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// Logs records what a *slog.Logger writes, with the attributes its
// handler was given through With, so a test can look for a key that
// appears twice in one record (queue=chat queue=chat) or for text that
// must never be logged. The zero value is not usable: use NewLogs.
type Logs struct {
	mu      sync.Mutex
	records []LogRecord
}

// LogRecord is one record: its level, message and every attribute in
// order, those added by With first, keys of groups qualified with dots.
type LogRecord struct {
	Level   slog.Level
	Message string
	Attrs   []slog.Attr
}

// Keys returns the record's keys, the message's "msg" first (the key text
// and JSON handlers write it under).
func (r LogRecord) Keys() []string {
	keys := []string{slog.MessageKey}
	for _, a := range r.Attrs {
		keys = append(keys, a.Key)
	}
	return keys
}

// Duplicates returns the keys that appear more than once in the record.
func (r LogRecord) Duplicates() []string {
	seen := map[string]int{}
	var dup []string
	for _, k := range r.Keys() {
		if seen[k]++; seen[k] == 2 {
			dup = append(dup, k)
		}
	}
	return dup
}

// String is the record as a text handler would write it, roughly.
func (r LogRecord) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "level=%s msg=%q", r.Level, r.Message)
	for _, a := range r.Attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	return b.String()
}

// NewLogs returns an empty recorder.
func NewLogs() *Logs { return &Logs{} }

// Logger returns a logger that records every level into l.
func (l *Logs) Logger() *slog.Logger { return slog.New(&logHandler{logs: l}) }

// Records returns a copy of what was logged so far.
func (l *Logs) Records() []LogRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LogRecord(nil), l.records...)
}

type logHandler struct {
	logs   *Logs
	attrs  []slog.Attr
	prefix string // open groups, "a.b."
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := LogRecord{Level: r.Level, Message: r.Message, Attrs: append([]slog.Attr(nil), h.attrs...)}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs = flatten(rec.Attrs, h.prefix, a)
		return true
	})
	h.logs.mu.Lock()
	h.logs.records = append(h.logs.records, rec)
	h.logs.mu.Unlock()
	return nil
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		n.attrs = flatten(n.attrs, h.prefix, a)
	}
	return &n
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	n := *h
	n.prefix = h.prefix + name + "."
	return &n
}

func flatten(dst []slog.Attr, prefix string, a slog.Attr) []slog.Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			dst = flatten(dst, p, g)
		}
		return dst
	}
	return append(dst, slog.Attr{Key: prefix + a.Key, Value: v})
}
