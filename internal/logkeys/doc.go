// Package logkeys holds the test that keeps the library's log keys
// documented: it parses the non-test Go files of the library's packages,
// finds every slog call (Debug, Info, Warn, Error and With on a logger)
// whose keys are string literals, and fails for a key that the table of
// docs/logging.md does not list, or for a call that names a key twice. It
// has no code of its own.
package logkeys
