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
			var args []ast.Expr
			switch sel.Sel.Name {
			case "Debug", "Info", "Warn", "Error":
				if len(ce.Args) == 0 || !isMessage(ce.Args[0]) {
					return true
				}
				args = ce.Args[1:]
			case "With":
				args = ce.Args
			default:
				return true
			}
			c := call{pos: fset.Position(ce.Pos())}
			for i := 0; i < len(args); i++ {
				lit, ok := args[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue // an slog.Attr, or a computed key: skip one
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
