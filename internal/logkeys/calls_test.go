package logkeys

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestLogCallsFindEveryForm: the check saw only Debug, Info, Warn and Error
// called with a literal "<package>: " message and keys as string
// literals, so a new key in any other form was never compared with
// docs/logging.md: the *Context methods (the first argument is the
// context), a message in a variable (cache/subscribe.go logs one), and
// keys given as slog.Attr (slog.String("key", ...)).
func TestLogCallsFindEveryForm(t *testing.T) {
	dir := t.TempDir()
	src := `package x

import (
	"context"
	"log/slog"
)

func f(ctx context.Context, log *slog.Logger, msg string) {
	log.WarnContext(ctx, "queue: with a context", "key_in_context_call", 1)
	log.Warn(msg, "key_after_variable_message", 1)
	log.Info("queue: attrs", slog.String("key_in_attr", "v"), slog.Int("key_in_int_attr", 1))
	log.Log(ctx, slog.LevelInfo, "queue: log", "key_in_log_call", 1)
	log.With(slog.Any("key_in_with_attr", 1)).Info("queue: plain", "plain_key", 1)
}
`
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range logCalls(t, dir) {
		got = append(got, c.keys...)
	}
	for _, k := range []string{"key_in_context_call", "key_after_variable_message", "key_in_attr", "key_in_int_attr",
		"key_in_log_call", "key_in_with_attr", "plain_key"} {
		if !slices.Contains(got, k) {
			t.Errorf("the check does not see the key %q (it saw %q)", k, got)
		}
	}
}
