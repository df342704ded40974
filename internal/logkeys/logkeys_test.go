package logkeys

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// packages are the library's packages whose log calls are checked.
var packages = []string{"cache", "lifecycle", "memwatch", "pool", "queue", "ratelimit"}

// documented returns the keys in the first column of docs/logging.md's
// tables (each in backticks; several per cell allowed).
func documented(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("../../docs/logging.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	tick := regexp.MustCompile("`([a-z_]+)`")
	for _, line := range strings.Split(string(raw), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, m := range tick.FindAllStringSubmatch(cells[1], -1) {
			keys[m[1]] = true
		}
	}
	if len(keys) < 20 {
		t.Fatalf("only %d keys found in docs/logging.md", len(keys))
	}
	return keys
}

// call is one log call with its literal keys.
type call struct {
	pos  token.Position
	keys []string
}

// logCalls returns the slog calls of the non-test files under dir: a
// method Debug, Info, Warn or Error whose first argument is a string
// literal starting with "<package>: ", and With; keys are the string
// literals at key positions (slog.Attr values and computed keys are
// skipped).
func logCalls(t *testing.T, dir string) []call {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []call
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			ce, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := ce.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			msg := -1 // the message's position; -1: none (With)
			switch sel.Sel.Name {
			case "Debug", "Info", "Warn", "Error":
				msg = 0
			case "DebugContext", "InfoContext", "WarnContext", "ErrorContext":
				msg = 1
			case "Log", "LogAttrs":
				msg = 2
			case "With":
			default:
				return true
			}
			// A logger's method: a "<package>: " message, or a receiver
			// named like a logger (the message may be in a variable).
			if len(ce.Args) <= msg || (msg >= 0 && !isMessage(ce.Args[msg]) && !isLogger(sel.X)) ||
				(msg < 0 && !isLogger(sel.X)) {
				return true
			}
			args := ce.Args[msg+1:]
			c := call{pos: fset.Position(ce.Pos())}
			for i := 0; i < len(args); i++ {
				if k, ok := attrKey(args[i]); ok {
					c.keys = append(c.keys, k) // slog.String("key", v): one argument
					continue
				}
				lit, ok := args[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue // an slog.Attr built elsewhere, or a computed key: skip one
				}
				k, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				c.keys = append(c.keys, k)
				i++ // its value
			}
			out = append(out, c)
			return true
		})
	}
	return out
}

// isLogger reports whether e, a method's receiver, is named like a logger
// (log, logger, w.log, s.c.log, ...) or is a call that returns one (With).
func isLogger(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.Ident:
		return strings.Contains(strings.ToLower(x.Name), "log")
	case *ast.SelectorExpr:
		return strings.Contains(strings.ToLower(x.Sel.Name), "log")
	case *ast.CallExpr:
		if sel, ok := x.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "With" {
			return isLogger(sel.X)
		}
	}
	return false
}

// attrKey returns the key of an slog.Attr made in place (slog.String("k",
// v), slog.Any, slog.Group, ...).
func attrKey(e ast.Expr) (string, bool) {
	ce, ok := e.(*ast.CallExpr)
	if !ok || len(ce.Args) == 0 {
		return "", false
	}
	sel, ok := ce.Fun.(*ast.SelectorExpr)
	if !ok {
		return "", false
	}
	if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "slog" {
		return "", false
	}
	lit, ok := ce.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	k, err := strconv.Unquote(lit.Value)
	return k, err == nil
}

// isMessage reports whether e is a string literal (or a concatenation
// starting with one) of the form "<package>: ...".
func isMessage(e ast.Expr) bool {
	if b, ok := e.(*ast.BinaryExpr); ok {
		return isMessage(b.X)
	}
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return false
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil {
		return false
	}
	for _, p := range packages {
		if strings.HasPrefix(s, p+": ") {
			return true
		}
	}
	return false
}

func TestLogKeysAreDocumented(t *testing.T) {
	keys := documented(t)
	n := 0
	for _, pkg := range packages {
		for _, c := range logCalls(t, filepath.Join("..", "..", pkg)) {
			n++
			seen := map[string]bool{}
			for _, k := range c.keys {
				if !keys[k] {
					t.Errorf("%s: log key %q is not in docs/logging.md's table", c.pos, k)
				}
				if seen[k] {
					t.Errorf("%s: log key %q twice in one call", c.pos, k)
				}
				seen[k] = true
			}
		}
	}
	if n < 50 {
		t.Fatalf("only %d log calls found: the parser misses them", n)
	}
	t.Logf("%d log calls checked", n)
}
