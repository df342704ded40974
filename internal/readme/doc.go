// Package readme holds the test that keeps the README's Go code compiling:
// it extracts every fenced ```go block from README.md and type-checks it
// against the packages of this module and the standard library, as the
// compiler would (unused variables and imports included), and checks that
// it is gofmt'd. It has no code of its own.
//
// A block is one of:
//
//   - a whole file: it starts with a package clause and has its imports;
//   - top-level declarations (funcs, types, vars) without a package clause or
//     imports: the test puts them in a package of their own and imports what
//     they name, by package name, from this module (cache, lifecycle,
//     memwatch, pool, queue, ratelimit) and from the standard library names
//     in stdImports. Statements outside a func do not compile: a snippet
//     goes in a func whose parameters say what it is given.
//
// A block that must not be compiled (pseudo-code, a diff) is marked with an
// HTML comment on the line just before its fence, which GitHub does not
// show, giving the reason:
//
//	<!-- readme: not compiled: shows the shape of a config, not a program -->
//
// Errors name the README line (README.md:line:column) and the heading the
// block sits under. go test -v lists the blocks checked and skipped.
package readme
