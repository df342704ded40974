package lease

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// TestLuaFromAnotherScript includes Lua in a script of its own, as another
// package would, and walks a key through its functions on fixed instants:
// admission up to the limit, the earliest end reported to a denied
// caller, expiry, renewal and re-admission, and a late release.
func TestLuaFromAnotherScript(t *testing.T) {
	for _, c := range []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"miniredis", func(t *testing.T) string { return redistest.Mini(t).Addr() }},
		{"server", func(t *testing.T) string { return redistest.Server(t).Addr() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: c.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			script := redis.NewScript(Lua + `
local op, now = ARGV[1], lease_now(ARGV[2])
if op == 'acquire' then
  local ok, n, wait = lease_acquire(KEYS[1], now, 10000000, 2, ARGV[3])
  return {ok, n, wait}
elseif op == 'renew' then
  return {lease_renew(KEYS[1], now, 10000000, 2, ARGV[3])}
elseif op == 'holders' then
  return {lease_holders(KEYS[1], now)}
end
return {lease_release(KEYS[1], ARGV[3])}
`)
			ctx := context.Background()
			// Instants in µs, 16 digits (2026-01-01, with low digits), which a score holds
			// exactly; the lease TTL is 1000 ticks of 10ms, so that the set's
			// PEXPIRE outlasts the test on a real server.
			const t0, tick = 1_767_225_600_000_123, 10_000
			do := func(op string, now int64, tok string) []int64 {
				v, err := script.Run(ctx, rdb, []string{"{q}:sem"}, op, now, tok).Int64Slice()
				require.NoError(t, err)
				return v
			}
			require.Equal(t, []int64{1, 1, 0}, do("acquire", t0, "a"))
			require.Equal(t, []int64{1, 2, 0}, do("acquire", t0+10*tick, "b"))
			require.Equal(t, []int64{0, 2, 990 * tick}, do("acquire", t0+10*tick, "c"), "a's lease ends at t0+1000*tick")
			require.Equal(t, []int64{1}, do("renew", t0+500*tick, "a"))
			require.Equal(t, []int64{0, 2, 510 * tick}, do("acquire", t0+500*tick, "c"), "now b's, at t0+1010*tick")
			require.Equal(t, []int64{1, 2, 0}, do("acquire", t0+1010*tick, "c"), "b's ended")
			require.Equal(t, []int64{0}, do("renew", t0+1010*tick, "b"), "b's lease is gone and the key full")
			require.Equal(t, []int64{0}, do("release", t0, "b"), "a late release frees nothing")
			require.Equal(t, []int64{1}, do("release", t0, "c"))
			require.Equal(t, []int64{2}, do("renew", t0+1010*tick, "b"), "room again: b takes its slot back")
			score, err := rdb.ZScore(ctx, "{q}:sem", "b").Result()
			require.NoError(t, err)
			require.Equal(t, float64(t0+2010*tick), score, "a score of 16 digits, exact")
			ttl, err := rdb.PTTL(ctx, "{q}:sem").Result()
			require.NoError(t, err)
			require.InDelta(t, 10*time.Second, ttl, float64(time.Second), "the set expires by itself, a LeaseTTL after its last write")
			require.Equal(t, []int64{2}, do("holders", t0+1010*tick, ""))
			require.Equal(t, []int64{0}, do("holders", t0+2010*tick, ""), "every lease ended")
			require.Zero(t, rdb.Exists(ctx, "{q}:sem").Val(), "an empty set is no key")
		})
	}
}

// TestKeepNeverShortens: a write with a shorter lease TTL than a lease
// already in the set (callers of different TTLs share it) leaves the
// set's TTL, so the longer lease is not dropped with the set.
func TestKeepNeverShortens(t *testing.T) {
	for _, c := range []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"miniredis", func(t *testing.T) string { return redistest.Mini(t).Addr() }},
		{"server", func(t *testing.T) string { return redistest.Server(t).Addr() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: c.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			script := redis.NewScript(Lua + `
local now = lease_now('')
if ARGV[1] == 'acquire' then
  return {lease_acquire(KEYS[1], now, tonumber(ARGV[2]), 10, ARGV[3])}
end
return {lease_renew(KEYS[1], now, tonumber(ARGV[2]), 10, ARGV[3])}
`)
			ctx := context.Background()
			pttl := func() time.Duration {
				d, err := rdb.PTTL(ctx, "{q}:sem").Result()
				require.NoError(t, err)
				return d
			}
			const long, short = 60_000_000, 1_000_000 // µs
			require.NoError(t, script.Run(ctx, rdb, []string{"{q}:sem"}, "acquire", long, "a").Err())
			require.NoError(t, script.Run(ctx, rdb, []string{"{q}:sem"}, "acquire", short, "b").Err())
			require.Greater(t, pttl(), 30*time.Second, "b's write kept a's TTL")
			require.NoError(t, script.Run(ctx, rdb, []string{"{q}:sem"}, "renew", short, "b").Err())
			require.Greater(t, pttl(), 30*time.Second, "b's renewal kept a's TTL")
		})
	}
}
