package ratelimit

import "sync/atomic"

// SourceStats counts the decisions one Source made.
type SourceStats struct {
	Source  string `json:"source"` // Source.String: redis, denied-cache or fallback
	Allowed uint64 `json:"allowed"`
	Denied  uint64 `json:"denied"`
}

// sources are the Sources that decide, in the order Stats.BySource lists
// them.
var sources = [...]Source{SourceRedis, SourceDeniedCache, SourceFallback}

// bySource counts decisions per Source and outcome: one atomic add per
// decision, next to the totals.
type bySource [len(sources) + 1][2]atomic.Uint64 // indexed by Source (0: none), then allowed

func (b *bySource) count(r Result) {
	i := 0
	if r.Allowed {
		i = 1
	}
	if int(r.Source) < len(b) {
		b[r.Source][i].Add(1)
	}
}

func (b *bySource) stats() []SourceStats {
	out := make([]SourceStats, len(sources))
	for i, s := range sources {
		out[i] = SourceStats{Source: s.String(), Denied: b[s][0].Load(), Allowed: b[s][1].Load()}
	}
	return out
}
