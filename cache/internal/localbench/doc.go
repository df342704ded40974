// Package localbench compares the cache's local tier with otter v2 in the
// same run. It is a module of its own so that otter never enters the
// library's go.mod; run it with
//
//	cd cache/internal/localbench && go test -run . -bench . -count 5
package localbench
