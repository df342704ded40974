package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func miniPool(t testing.TB) (*miniredis.Miniredis, *pool.Pool) {
	m := redistest.Mini(t)
	return m, newPool(t, pool.Config{Addrs: []string{m.Addr()}})
}

func TestNewValidatesNameAndConfig(t *testing.T) {
	_, p := miniPool(t)
	_, err := New[item](nil, "x", Config[item]{})
	require.ErrorContains(t, err, "nil pool")
	require.ErrorIs(t, err, ErrInvalidConfig)

	// The name is the hash tag of every key: check.Name's rules.
	for _, name := range []string{"", "  ", "a{b", "c}", "a b", "tab\t", "nl\n", strings.Repeat("n", 101)} {
		_, err := New(p, name, Config[item]{})
		require.ErrorIs(t, err, ErrInvalidConfig, "name %q", name)
		require.ErrorContains(t, err, "cache: invalid config: name ", "name %q", name)
	}
	_, err = New(p, strings.Repeat("n", 100), Config[item]{})
	require.NoError(t, err, "100 bytes is the limit")
	cases := []struct {
		cfg  Config[item]
		want string
	}{
		{Config[item]{TTL: -time.Second}, "Config.TTL must not be negative"},
		{Config[item]{NegativeTTL: -1}, "Config.NegativeTTL must not be negative"},
		{Config[item]{TTLJitter: 1}, "Config.TTLJitter must be in [0, 1), got 1"},
		{Config[item]{TTLJitter: -0.1}, "Config.TTLJitter must be in [0, 1)"},
		{Config[item]{MaxValueBytes: -1}, "Config.MaxValueBytes must not be negative"},
		{Config[item]{MaxEntries: -5}, "Config.MaxEntries must not be negative, got -5"},
		{Config[item]{MaxBytes: -5}, "Config.MaxBytes must not be negative, got -5"},
		{Config[item]{NoLocal: true, MaxEntries: 10}, "Config.NoLocal is set but Config.MaxEntries"},
		{Config[item]{LocalTTL: -1}, "Config.LocalTTL must not be negative"},
		{Config[item]{NoLocal: true, LocalTTL: -1}, "Config.LocalTTL must not be negative"},
		{Config[item]{LoadTimeout: -1}, "Config.LoadTimeout must not be negative"},
		{Config[item]{LoadTimeout: MaxLoadTimeout + 1}, "Config.LoadTimeout must be at most 24h0m0s"},
		{Config[item]{LockTTL: -1}, "Config.LockTTL must not be negative"},
		{Config[item]{LockTTL: MaxLoadTimeout + DefaultLockMargin + 1}, "Config.LockTTL must be at most"},
		{Config[item]{LoadTimeout: 10 * time.Second, LockTTL: time.Second}, "Config.LockTTL (1s) must be at least Config.LoadTimeout (10s)"},
		{Config[item]{PingInterval: -1}, "Config.PingInterval must not be negative"},
		// Each unanswered interval reconnects and flushes the local tier.
		{Config[item]{PingInterval: time.Microsecond}, "Config.PingInterval must be at least 100ms (each late reply reconnects and flushes the local tier), got 1µs"},
		{Config[item]{PingInterval: 99 * time.Millisecond}, "Config.PingInterval must be at least 100ms"},
		{Config[item]{MaxLoads: -1}, "Config.MaxLoads must not be negative, got -1"},
		// PX 0 is an error in Redis, and a sub-millisecond TTL is sent as 0.
		{Config[item]{LoadTimeout: 100 * time.Microsecond, LockTTL: 999 * time.Microsecond}, "Config.LockTTL must be at least 1ms"},
		{Config[item]{LoadTimeout: 100 * time.Microsecond, LockTTL: 999 * time.Microsecond, NoLock: true}, "Config.LockTTL must be at least 1ms"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			got, err := New(p, "x", c.cfg)
			require.Nil(t, got)
			require.ErrorContains(t, err, c.want)
			require.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
}

func TestDefaultsAndKeys(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "users", Config[item]{})
	require.Equal(t, DefaultTTL, c.cfg.TTL)
	require.Equal(t, DefaultMaxEntries, c.cfg.MaxEntries)
	require.Equal(t, int64(DefaultMaxBytes), c.cfg.MaxBytes)
	require.Equal(t, DefaultLocalTTL, c.cfg.LocalTTL)
	require.Equal(t, DefaultLoadTimeout+DefaultLockMargin, c.cfg.LockTTL)
	require.Equal(t, DefaultMaxLoads, c.cfg.MaxLoads)
	require.Equal(t, DefaultMaxLoads, cap(c.loads.slots))
	require.Equal(t, "{c:users}:k:42", c.RedisKey("42"))
	require.Equal(t, "{c:users}:l:42", c.lockKey("42"))
	require.Equal(t, "{c:users}:inval", c.Channel())
	require.IsType(t, JSON[item]{}, c.codec)

	nl := newCache(t, p, "nolocal", Config[item]{NoLocal: true})
	require.Nil(t, nl.local)
}

func TestSetGetBothTiers(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	a := newCache(t, p, "users", Config[item]{})
	b := newCache(t, p, "users", Config[item]{}) // another instance of the same cache

	want := item{ID: 1, Name: "ada", Score: 7}
	require.NoError(t, a.Set(ctx, "1", want, time.Minute))

	// Redis holds the kind byte and the JSON.
	raw, err := m.Get("{c:users}:k:1")
	require.NoError(t, err)
	js, _ := json.Marshal(want)
	require.Equal(t, "\x01"+string(js), raw)
	require.Equal(t, time.Minute, m.TTL("{c:users}:k:1"))

	got, err := a.Get(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, uint64(1), a.Stats().LocalHits, "the writer keeps its value locally")

	got, err = b.Get(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, want, got)
	got, err = b.Get(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, want, got)
	st := b.Stats()
	require.Equal(t, uint64(1), st.RedisHits)
	require.Equal(t, uint64(1), st.LocalHits)
	require.Equal(t, int64(1), st.LocalEntries)
	require.Equal(t, int64(len("1")+len(raw)), st.LocalBytes, "key plus encoded value")

	_, err = b.Get(ctx, "nope")
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, uint64(1), b.Stats().Misses)

	js, err = json.Marshal(b.Stats())
	require.NoError(t, err)
	require.Contains(t, string(js), `"local_hits":1,"redis_hits":1,"misses":1,`)
	require.Contains(t, string(js), `"local_entries":1`)
}

func TestRawCodecForBytesAndString(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	bc := newCache(t, p, "bytes", Config[[]byte]{NoLocal: true})
	require.NoError(t, bc.Set(ctx, "k", []byte{0, 1, 2, 255}, time.Minute))
	raw, _ := m.Get("{c:bytes}:k:k")
	require.Equal(t, "\x01\x00\x01\x02\xff", raw)
	got, err := bc.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2, 255}, got)

	sc := newCache(t, p, "strings", Config[string]{NoLocal: true})
	require.NoError(t, sc.Set(ctx, "k", "hello", time.Minute))
	raw, _ = m.Get("{c:strings}:k:k")
	require.Equal(t, "\x01hello", raw)
	s, err := sc.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "hello", s)

	// A value not written by this package is refused, not misread.
	m.Set("{c:strings}:k:foreign", "plain")
	_, err = sc.Get(ctx, "foreign")
	require.ErrorIs(t, err, ErrCodec)
	m.Set("{c:strings}:k:empty", "")
	_, err = sc.Get(ctx, "empty")
	require.ErrorIs(t, err, ErrCodec)
}

func TestLocalEntryNeverOutlivesRedisTTL(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	clk := testutil.NewClock()
	a := newCache(t, p, "ttl", Config[string]{})
	b := newCache(t, p, "ttl", Config[string]{Now: clk.Now, LocalTTL: time.Hour})

	require.NoError(t, a.Set(ctx, "k", "v", 500*time.Millisecond))
	_, err := b.Get(ctx, "k") // from Redis, with its PTTL
	require.NoError(t, err)

	clk.Advance(499 * time.Millisecond)
	_, err = b.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, uint64(1), b.Stats().LocalHits)

	clk.Advance(time.Millisecond)
	m.FastForward(500 * time.Millisecond)
	_, err = b.Get(ctx, "k")
	require.ErrorIs(t, err, ErrNotFound, "at the Redis TTL the local copy is gone too")
	require.Equal(t, uint64(1), b.Stats().LocalHits)
}

func TestLocalTTLCapsTheLocalCopy(t *testing.T) {
	_, p := miniPool(t)
	ctx := context.Background()
	clk := testutil.NewClock()
	c := newCache(t, p, "cap", Config[string]{Now: clk.Now, LocalTTL: 10 * time.Second})
	require.NoError(t, c.Set(ctx, "k", "v", time.Hour))
	clk.Advance(10*time.Second - time.Millisecond)
	_, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, uint64(1), c.Stats().LocalHits)
	clk.Advance(time.Millisecond)
	_, err = c.Get(ctx, "k")
	require.NoError(t, err)
	st := c.Stats()
	require.Equal(t, uint64(1), st.LocalHits)
	require.Equal(t, uint64(1), st.RedisHits, "past LocalTTL the value comes from Redis again")
}

func TestTTLsInMilliseconds(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	c := newCache(t, p, "ms", Config[string]{})
	require.NoError(t, c.Set(ctx, "a", "v", 1500*time.Microsecond))
	require.Equal(t, 2*time.Millisecond, m.TTL("{c:ms}:k:a"), "rounded up, not down to 1s or to nothing")
	require.NoError(t, c.Set(ctx, "b", "v", 250*time.Millisecond))
	require.Equal(t, 250*time.Millisecond, m.TTL("{c:ms}:k:b"))

	j := newCache(t, p, "jitter", Config[string]{TTLJitter: 0.5})
	seen := map[time.Duration]bool{}
	for i := range 50 {
		k := string(rune('a' + i))
		require.NoError(t, j.Set(ctx, k, "v", time.Second))
		ttl := m.TTL("{c:jitter}:k:" + k)
		require.GreaterOrEqual(t, ttl, 500*time.Millisecond)
		require.LessOrEqual(t, ttl, time.Second)
		seen[ttl] = true
	}
	require.Greater(t, len(seen), 10, "jittered TTLs differ")
}

// failCodec fails to encode one value.
type failCodec struct{ JSON[item] }

func (failCodec) Encode(v item) ([]byte, error) {
	if v.Name == "bad" {
		return nil, errors.New("cannot encode bad")
	}
	return json.Marshal(v)
}

func TestBadInputWritesNothing(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	c := newCache(t, p, "bad", Config[item]{Codec: failCodec{}, MaxValueBytes: 64})
	loader := func(context.Context) (item, error) { return item{}, nil }

	_, err := c.Get(ctx, "")
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorIs(t, c.Set(ctx, "", item{}, time.Second), ErrInvalid)
	require.ErrorIs(t, c.Delete(ctx, "a", ""), ErrInvalid)
	_, err = c.GetOrLoad(ctx, "", loader)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = c.GetOrLoad(ctx, "k", nil)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorIs(t, c.Set(ctx, "k", item{}, 0), ErrInvalid)
	require.ErrorIs(t, c.Set(ctx, "k", item{}, -time.Second), ErrInvalid)

	err = c.Set(ctx, "k", item{Name: "bad"}, time.Second)
	require.ErrorIs(t, err, ErrCodec)
	require.ErrorContains(t, err, "cannot encode bad")

	err = c.Set(ctx, "k", item{Name: strings.Repeat("x", 100)}, time.Second)
	require.ErrorIs(t, err, ErrValueTooLarge)
	var tl *TooLargeError
	require.ErrorAs(t, err, &tl)
	require.Equal(t, "k", tl.Key)
	require.Equal(t, 64, tl.Max)
	require.Greater(t, tl.Size, 100)
	require.ErrorContains(t, err, `key "k"`)

	// A loader's value that cannot be written fails the same way.
	_, err = c.GetOrLoad(ctx, "k", func(context.Context) (item, error) { return item{Name: "bad"}, nil })
	require.ErrorIs(t, err, ErrCodec)
	_, err = c.GetOrLoad(ctx, "k", func(context.Context) (item, error) { return item{Name: strings.Repeat("x", 100)}, nil })
	require.ErrorIs(t, err, ErrValueTooLarge)

	require.Empty(t, m.Keys(), "nothing reached Redis, not even a lock")
	st := c.Stats()
	require.Zero(t, st.LocalEntries)
	require.Equal(t, uint64(2), st.InvalidationsSent, "only the notes releasing the load lock")
	require.Equal(t, uint64(2), st.LoadErrors)

	// A failed Set leaves the previous value alone.
	require.NoError(t, c.Set(ctx, "k", item{Name: "good"}, time.Minute))
	require.Error(t, c.Set(ctx, "k", item{Name: "bad"}, time.Minute))
	got, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "good", got.Name)
}

func TestDelete(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	a := newCache(t, p, "del", Config[string]{})
	b := newCache(t, p, "del", Config[string]{})
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, a.Set(ctx, k, k, time.Minute))
		_, err := b.Get(ctx, k)
		require.NoError(t, err)
	}
	require.NoError(t, a.Delete(ctx, "a", "b", "missing"))
	require.False(t, m.Exists("{c:del}:k:a"))
	require.False(t, m.Exists("{c:del}:k:b"))
	require.True(t, m.Exists("{c:del}:k:c"))
	_, err := a.Get(ctx, "a")
	require.ErrorIs(t, err, ErrNotFound, "dropped locally too")
	require.Equal(t, int64(1), a.Stats().LocalEntries)
	require.Equal(t, uint64(4), a.Stats().InvalidationsSent, "three sets, one delete")
	require.NoError(t, a.Delete(ctx))
}

func TestInvalidationMessages(t *testing.T) {
	msgs := keyMessages(42, opKeys, []string{"a", "bb", ""})
	require.Len(t, msgs, 1)
	from, op, keys, ok := parseInvalidation(msgs[0])
	require.True(t, ok)
	require.Equal(t, uint64(42), from)
	require.Equal(t, byte(opKeys), op)
	var got []string
	for keys != "" {
		var k string
		k, keys, ok = nextKey(keys)
		require.True(t, ok)
		got = append(got, k)
	}
	require.Equal(t, []string{"a", "bb", ""}, got)

	// Many keys are split; none is lost and no message is over the limit.
	many := make([]string, 5000)
	for i := range many {
		many[i] = strings.Repeat("k", 10) + string(rune('a'+i%26)) + strings.Repeat("x", i%7)
	}
	msgs = keyMessages(1, opKeys, many)
	require.Greater(t, len(msgs), 1)
	n := 0
	for _, m := range msgs {
		require.LessOrEqual(t, len(m), maxMessageBytes)
		_, _, keys, ok := parseInvalidation(m)
		require.True(t, ok)
		for keys != "" {
			_, keys, ok = nextKey(keys)
			require.True(t, ok)
			n++
		}
	}
	require.Equal(t, len(many), n)

	// A key too long for any message becomes a flush.
	msgs = keyMessages(1, opKeys, []string{"short", strings.Repeat("x", maxMessageBytes)})
	require.Len(t, msgs, 2)
	_, op, _, _ = parseInvalidation(msgs[1])
	require.Equal(t, byte(opFlush), op)

	for _, bad := range []string{"", "I", "Xk12345678", "Iz12345678"} {
		_, _, _, ok := parseInvalidation(bad)
		require.False(t, ok, "%q", bad)
	}
	_, _, ok = nextKey("\x05ab")
	require.False(t, ok, "length past the end")
	_, _, ok = nextKey("\xff\xff")
	require.False(t, ok, "unterminated length")
}

func TestApplyIgnoresOwnAndCorruptMessages(t *testing.T) {
	_, p := miniPool(t)
	ctx := context.Background()
	c := newCache(t, p, "apply", Config[string]{})
	require.NoError(t, c.Set(ctx, "k", "v", time.Minute))
	require.NoError(t, c.Set(ctx, "j", "v", time.Minute))

	c.apply(keyMessages(c.id, opKeys, []string{"k"})[0])
	require.Equal(t, int64(2), c.Stats().LocalEntries, "own message ignored")

	c.apply(keyMessages(c.id+1, opKeys, []string{"k"})[0])
	st := c.Stats()
	require.Equal(t, int64(1), st.LocalEntries)
	require.Equal(t, uint64(1), st.InvalidationsReceived)

	c.apply("garbage")
	require.Equal(t, uint64(1), c.Stats().BadMessages)
	require.Equal(t, int64(1), c.Stats().LocalEntries)

	msg := keyMessages(c.id+1, opKeys, []string{"x"})[0]
	c.apply(msg[:len(msg)-1]) // truncated key: drop everything to be safe
	st = c.Stats()
	require.Equal(t, uint64(2), st.BadMessages)
	require.Zero(t, st.LocalEntries)
	require.Equal(t, uint64(1), st.Flushes)
}

// Without a local tier the TTL is never needed, so a Redis read is one
// command; with one, GET and PTTL share a round trip.
func TestRedisReadCommands(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	for _, c := range []struct {
		cfg  Config[item]
		want int
	}{{Config[item]{NoLocal: true}, 1}, {Config[item]{}, 2}} {
		writer := newCache(t, p, "reads", Config[item]{NoLocal: true})
		require.NoError(t, writer.Set(ctx, "k", item{ID: 1}, time.Minute))
		reader := newCache(t, p, "reads", c.cfg)
		before := m.CommandCount()
		got, err := reader.Get(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, 1, got.ID)
		require.Equal(t, c.want, m.CommandCount()-before, "NoLocal=%v", c.cfg.NoLocal)
	}
}

// TestLocalTTLAfterClockStepsBack: a Config.Now without a monotonic
// reading (a wall clock stepped back by NTP, say) can read before the
// instant New took as its origin. LocalTTL still bounds the local copy:
// the saturation meant for a LocalTTL near forever must not take a
// negative start for an overflow and keep the copy for ever.
func TestLocalTTLAfterClockStepsBack(t *testing.T) {
	_, p := miniPool(t)
	ctx := context.Background()
	clk := testutil.NewClock()
	c := newCache(t, p, "stepback", Config[string]{Now: clk.Now, LocalTTL: 10 * time.Second})
	clk.Advance(-time.Minute)
	require.NoError(t, c.Set(ctx, "k", "v", time.Hour))
	clk.Advance(10 * time.Second)
	_, err := c.Get(ctx, "k")
	require.NoError(t, err)
	st := c.Stats()
	require.Zero(t, st.LocalHits, "past LocalTTL the local copy is gone")
	require.Equal(t, uint64(1), st.RedisHits)
}

// TestInvalidationCountedOnceApplied: Stats.InvalidationsReceived counts
// messages applied, so whoever sees the count go up (the tests across
// instances wait for it) finds the copies already dropped. A message of
// 2,000 keys keeps the drops going long enough for a reader to look in
// between.
func TestInvalidationCountedOnceApplied(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "counted", Config[string]{})
	keys := make([]string, 2000)
	for i := range keys {
		keys[i] = fmt.Sprintf("%04d", i)
	}
	msgs := keyMessages(c.id+1, opKeys, keys)
	require.Len(t, msgs, 1)
	for round := range 20 {
		for _, k := range keys {
			c.local.fill(k, "v", false, 1, math.MaxInt64, never, c.local.gen(k))
		}
		require.Equal(t, int64(len(keys)), c.Stats().LocalEntries)
		applied := make(chan struct{})
		go func() {
			defer close(applied)
			c.apply(msgs[0])
		}()
		deadline := time.Now().Add(testutil.Wait)
		for c.Stats().InvalidationsReceived == uint64(round) && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		require.Zero(t, c.Stats().LocalEntries, "round %d: the message was counted before its keys were dropped", round)
		testutil.Recv(t, applied, "apply to return")
	}
}

// A NaN TTLJitter passes "< 0 || >= 1" (every comparison with NaN is
// false), and redisTTL then turns every TTL into NaN nanoseconds: on amd64
// the conversion gives math.MinInt64 and every value expires after 1ms.
// New refuses it as it refuses 1.
func TestTTLJitterNaNIsRefused(t *testing.T) {
	_, p := miniPool(t)
	for _, j := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		c, err := New(p, "nan", Config[string]{TTLJitter: j})
		require.Nil(t, c, "TTLJitter %v", j)
		require.ErrorIs(t, err, ErrInvalidConfig, "TTLJitter %v", j)
		require.ErrorContains(t, err, "Config.TTLJitter must be in [0, 1)", "TTLJitter %v", j)
	}
}
