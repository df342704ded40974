package ratelimit

import "sync/atomic"

// bySource counts decisions per Source and outcome, one atomic add per
// decision next to the totals, so that an exporter reads each split
// directly instead of subtracting counters read at different moments
// (which could make a counter go backwards). SourceDeniedCache only ever
// denies: Stats.DeniedCache counts it.
type bySource struct {
	redisAllowed, redisDenied, fallbackAllowed, fallbackDenied atomic.Uint64
}

func (b *bySource) count(r Result) {
	switch {
	case r.Source == SourceRedis && r.Allowed:
		b.redisAllowed.Add(1)
	case r.Source == SourceRedis:
		b.redisDenied.Add(1)
	case r.Source == SourceFallback && r.Allowed:
		b.fallbackAllowed.Add(1)
	case r.Source == SourceFallback:
		b.fallbackDenied.Add(1)
	}
}

func (b *bySource) fill(s *Stats) {
	s.RedisAllowed, s.RedisDenied = b.redisAllowed.Load(), b.redisDenied.Load()
	s.FallbackAllowed, s.FallbackDenied = b.fallbackAllowed.Load(), b.fallbackDenied.Load()
}
