package readme

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const modulePath = "github.com/bounded-go/bounded"

// moduleImports are the packages a declarations block may name without
// importing them.
var moduleImports = []string{"cache", "lifecycle", "memwatch", "pool", "queue", "ratelimit"}

// stdImports are the standard library packages a declarations block may
// name without importing them, by package name.
var stdImports = map[string]string{
	"context": "context",
	"errors":  "errors",
	"fmt":     "fmt",
	"http":    "net/http",
	"json":    "encoding/json",
	"log":     "log",
	"os":      "os",
	"signal":  "os/signal",
	"slog":    "log/slog",
	"strings": "strings",
	"syscall": "syscall",
	"time":    "time",
}

// skipMarker, on the line before a fence, keeps a block out of the check;
// the reason follows it.
const skipMarker = "<!-- readme: not compiled:"

// block is one fenced ```go block of a Markdown file.
type block struct {
	file    string // the Markdown file's name, for positions
	line    int    // line of the block's first line of code (1-based)
	heading string // the nearest heading above the block
	code    string
	skip    string // why it is not compiled ("" : it is)
}

func (b block) String() string {
	return fmt.Sprintf("%s:%d (the Go block under %q)", b.file, b.line, b.heading)
}

// extract returns the ```go blocks of a Markdown text.
func extract(name, md string) ([]block, error) {
	var (
		out     []block
		cur     *block
		code    strings.Builder
		heading = "(top)"
		prev    string // the last line outside a block
	)
	sc := bufio.NewScanner(strings.NewReader(md))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur != nil && strings.HasPrefix(trimmed, "```"):
			cur.code = code.String()
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			code.WriteString(line)
			code.WriteByte('\n')
		case trimmed == "```go":
			cur = &block{file: name, line: n + 1, heading: heading}
			code.Reset()
			if r, ok := strings.CutPrefix(strings.TrimSpace(prev), skipMarker); ok {
				cur.skip = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(r), "-->"))
				if cur.skip == "" {
					return nil, fmt.Errorf("%s:%d: %s needs a reason", name, n-1, skipMarker)
				}
			}
		case strings.HasPrefix(line, "#"):
			heading = line
		}
		if cur == nil && !strings.HasPrefix(trimmed, "```") {
			prev = line
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: a ```go block is never closed", name, cur.line-1)
	}
	return out, sc.Err()
}

// source returns b as a Go file whose positions are b's lines in the
// Markdown file, and the import paths it needs.
func (b block) source() (string, []string, error) {
	directive := fmt.Sprintf("//line %s:%d:1\n", b.file, b.line)
	if strings.HasPrefix(strings.TrimSpace(b.code), "package ") ||
		strings.Contains(b.code, "\npackage ") {
		f, err := parser.ParseFile(token.NewFileSet(), b.file, b.code, parser.ImportsOnly)
		if err != nil {
			return "", nil, err
		}
		var paths []string
		for _, imp := range f.Imports {
			paths = append(paths, strings.Trim(imp.Path.Value, `"`))
		}
		return directive + b.code, paths, nil
	}
	f, err := parser.ParseFile(token.NewFileSet(), b.file, "package readme\n"+directive+b.code, 0)
	if err != nil {
		return "", nil, err
	}
	var paths []string
	// The identifiers the file does not declare are the package names it uses.
	for _, id := range f.Unresolved {
		p := importPath(id.Name)
		if p != "" && !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	var src strings.Builder
	src.WriteString("package readme\n\nimport (\n")
	for _, p := range paths {
		fmt.Fprintf(&src, "\t%q\n", p)
	}
	src.WriteString(")\n\n")
	src.WriteString(directive)
	src.WriteString(b.code)
	return src.String(), paths, nil
}

func importPath(name string) string {
	if slices.Contains(moduleImports, name) {
		return modulePath + "/" + name
	}
	return stdImports[name]
}

// exportData builds (or finds in the build cache) the export data of paths
// and everything they import, as the compiler would, and returns the files
// by import path.
func exportData(root string, paths []string) (map[string]string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the go command is needed to build the README's imports: %w", err)
	}
	cmd := exec.Command(goBin, append([]string{"list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}"}, paths...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -export %s: %w\n%s", strings.Join(paths, " "), err, stderr.String())
	}
	files := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if p, f, ok := strings.Cut(line, "\t"); ok && f != "" {
			files[p] = f
		}
	}
	return files, nil
}

// check type-checks the blocks of a Markdown file and returns one error per
// block that does not compile or is not gofmt'd.
func check(root string, blocks []block) ([]error, error) {
	type parsed struct {
		b   block
		src string
	}
	var (
		todo  []parsed
		paths []string
		errs  []error
	)
	for _, b := range blocks {
		if b.skip != "" {
			continue
		}
		if formatted, err := format.Source([]byte(b.code)); err == nil && string(formatted) != b.code {
			errs = append(errs, fmt.Errorf("%s is not gofmt'd; gofmt makes it:\n%s", b, formatted))
		}
		src, ps, err := b.source()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s does not parse:\n\t%v", b, err))
			continue
		}
		todo = append(todo, parsed{b, src})
		paths = append(paths, ps...)
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	files := map[string]string{}
	if len(paths) > 0 {
		var err error
		if files, err = exportData(root, paths); err != nil {
			return nil, err
		}
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := files[path]
		if !ok {
			return nil, fmt.Errorf("no export data for %q (a package the README imports that the test did not build)", path)
		}
		return os.Open(f)
	})
	for _, p := range todo {
		f, err := parser.ParseFile(fset, p.b.file, p.src, parser.ParseComments)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s does not parse:\n\t%v", p.b, err))
			continue
		}
		var msgs []string
		conf := types.Config{Importer: imp, Error: func(err error) { msgs = append(msgs, err.Error()) }}
		_, _ = conf.Check(f.Name.Name, fset, []*ast.File{f}, nil)
		if len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s does not compile:\n\t%s", p.b, strings.Join(msgs, "\n\t")))
		}
	}
	return errs, nil
}

// TestREADMECompiles is the README's promise: every Go block in it
// compiles against this module as it is.
func TestREADMECompiles(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := extract("README.md", string(md))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```go block: the extraction is broken, or the README lost its code")
	}
	for _, b := range blocks {
		if b.skip != "" {
			t.Logf("%s: not compiled: %s", b, b.skip)
		} else {
			t.Logf("%s: checked", b)
		}
	}
	errs, err := check(root, blocks)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range errs {
		t.Error(err)
	}
}

// TestCheckNamesTheLine: a block that does not compile is reported at its
// line in the Markdown file, under its heading; a marked block is skipped,
// and a marker without a reason is refused.
func TestCheckNamesTheLine(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	md := "# Title\n\n## queue\n\ntext\n\n```go\nfunc start(g *lifecycle.Group, q *queue.Queue) error {\n\treturn queue.NewWorker(q, nil, queue.WorkerConfig{}).Start(g)\n}\n```\n\n" +
		"<!-- readme: not compiled: pseudo-code -->\n```go\nthis is not Go\n```\n\n" +
		"## fine\n\n```go\nfunc ok(ctx context.Context) error {return ctx.Err()}\n```\n"
	blocks, err := extract("X.md", md)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 3 || blocks[0].line != 8 || blocks[1].skip != "pseudo-code" || blocks[2].heading != "## fine" {
		t.Fatalf("extract: %+v", blocks)
	}
	errs, err := check(root, blocks)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{
		`X.md:8 (the Go block under "## queue") does not compile`,
		"X.md:9:",                        // the line of the call, in the Markdown file
		"multiple-value queue.NewWorker", // what is wrong with it
		`X.md:21 (the Go block under "## fine") is not gofmt'd`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("the errors do not contain %q:\n%s", want, all)
		}
	}
	if len(errs) != 2 {
		t.Errorf("want 2 errors (the queue block, the unformatted one), got %d:\n%s", len(errs), all)
	}

	_, err = extract("X.md", "<!-- readme: not compiled: -->\n```go\nx\n```\n")
	if err == nil || !strings.Contains(err.Error(), "needs a reason") {
		t.Errorf("a marker without a reason: %v", err)
	}
}
