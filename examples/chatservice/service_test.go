package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every condition a test waits for.
const wait = 10 * time.Second

type harness struct {
	t      *testing.T
	g      *lifecycle.Group
	s      *service
	url    string
	client *http.Client
	closed bool
}

// startService builds the service on redisURL, serves it on a free loopback
// port and closes its group at the end of the test (if the test did not).
func startService(t *testing.T, redisURL string, mod func(*Config)) *harness {
	t.Helper()
	cfg := Config{RedisURL: redisURL, AgentsLatency: 20 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	h := &harness{t: t, g: lifecycle.New()}
	t.Cleanup(func() {
		if !h.closed {
			h.close()
		}
	})
	var err error
	h.s, err = newService(h.g, cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, h.s.serve(ln))
	h.url = "http://" + ln.Addr().String()
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	t.Cleanup(tr.CloseIdleConnections)
	h.client = &http.Client{Transport: tr, Timeout: wait}
	return h
}

// close closes the group and checks that nothing is left running.
func (h *harness) close() {
	h.t.Helper()
	h.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(h.t, h.g.Close(ctx))
	require.Empty(h.t, h.g.Tasks(), "tasks left after Close")
	h.client.Transport.(*http.Transport).CloseIdleConnections()
}

// do sends a request and returns the status, headers and body.
func (h *harness) do(method, path, body string) (int, http.Header, []byte) {
	h.t.Helper()
	code, hdr, b, err := h.try(method, path, body)
	require.NoError(h.t, err)
	return code, hdr, b
}

// try is do for conditions that Eventually runs on another goroutine, where
// require must not be called.
func (h *harness) try(method, path, body string) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

func (h *harness) getJSON(path string, want int, v any) {
	h.t.Helper()
	code, _, body := h.do(http.MethodGet, path, "")
	require.Equal(h.t, want, code, "GET %s: %s", path, body)
	require.NoError(h.t, json.Unmarshal(body, v), "GET %s: %s", path, body)
}

// post sends a chat and returns its id, requiring a 202.
func (h *harness) post(user, agent, message string) string {
	h.t.Helper()
	body, _ := json.Marshal(chatapi.ChatRequest{User: user, Agent: agent, Message: message})
	code, hdr, resp := h.do(http.MethodPost, chatapi.PathChat, string(body))
	require.Equal(h.t, http.StatusAccepted, code, "%s", resp)
	var a chatapi.Accepted
	require.NoError(h.t, json.Unmarshal(resp, &a))
	require.NotEmpty(h.t, a.ID)
	require.Equal(h.t, chatapi.StatusPending, a.Status)
	require.Equal(h.t, chatapi.PathChat+"/"+a.ID, hdr.Get("Location"))
	return a.ID
}

// reply waits until the chat is no longer pending and returns it.
func (h *harness) reply(id string) chatapi.Reply {
	h.t.Helper()
	var r chatapi.Reply
	var last string
	ok := assert.Eventually(h.t, func() bool {
		code, _, body, err := h.try(http.MethodGet, chatapi.PathChat+"/"+id, "")
		if err != nil || (code != http.StatusOK && code != http.StatusAccepted) {
			last = fmt.Sprintf("%d %s %v", code, body, err)
			return false
		}
		return json.Unmarshal(body, &r) == nil && code == http.StatusOK
	}, wait, 5*time.Millisecond)
	require.True(h.t, ok, "chat %s: last answer %s", id, last)
	return r
}

func (h *harness) debug() chatapi.Debug {
	h.t.Helper()
	d, err := h.tryDebug()
	require.NoError(h.t, err)
	return d
}

func (h *harness) tryDebug() (chatapi.Debug, error) {
	var d chatapi.Debug
	code, _, body, err := h.try(http.MethodGet, chatapi.PathDebug, "")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET %s: %d %s", chatapi.PathDebug, code, body)
	}
	if err == nil {
		err = json.Unmarshal(body, &d)
	}
	return d, err
}

func TestService_Mini(t *testing.T) {
	testService(t, func(t *testing.T) string { return "redis://" + redistest.Mini(t).Addr() })
}

func TestService_Server(t *testing.T) {
	testService(t, func(t *testing.T) string { return redistest.Server(t).URL() })
}

// testService exercises every endpoint of a service on the Redis newRedis
// gives, then closes it.
func testService(t *testing.T, newRedis func(t *testing.T) string) {
	// The wait target off: this test queues more chats at once than there
	// are handlers (sojourn_test.go tests the shedding).
	h := startService(t, newRedis(t), func(c *Config) { c.FailRate = 0; c.WaitTarget = -1 })

	// A chat goes through the model and comes back with the follow-ups done.
	const chats = 20
	ids := make([]string, chats)
	for i := range ids {
		ids[i] = h.post("user-"+string(rune('a'+i%5)), "coder", "hello "+strings.Repeat("x", i))
	}
	for i, id := range ids {
		r := h.reply(id)
		assert.Equal(t, chatapi.StatusDone, r.Status)
		assert.Equal(t, "coder", r.Agent)
		assert.Equal(t, "sim-code", r.Model)
		assert.Contains(t, r.Reply, "You said: hello "+strings.Repeat("x", i))
		assert.Equal(t, 1, r.Attempts)
		assert.False(t, r.DoneAt.Before(r.CreatedAt))
	}
	require.Eventually(t, func() bool {
		d, err := h.tryDebug()
		if err != nil {
			return false
		}
		for _, name := range chatapi.Queues() {
			q := d.Queues[name]
			if q.Error != "" || q.Local == nil || q.Local.Processed != chats || q.Ready+q.Delayed+q.InFlight != 0 {
				return false
			}
		}
		return true
	}, wait, 10*time.Millisecond, "every chat, embedding and webhook processed")

	// Agents come from the cache: one load (at warm-up or on first use)
	// however many reads.
	for range 3 {
		var a chatapi.Agents
		h.getJSON(chatapi.PathAgents, http.StatusOK, &a)
		require.Len(t, a.Agents, 3)
		assert.Equal(t, "assistant", a.Agents[0].Name)
	}

	// Unknown and malformed ids.
	code, _, body := h.do(http.MethodGet, chatapi.PathChat+"/NOSUCHCHAT", "")
	assert.Equal(t, http.StatusNotFound, code, "%s", body)
	assert.Contains(t, string(body), `no chat \"NOSUCHCHAT\"`)
	code, _, body = h.do(http.MethodGet, chatapi.PathChat+"/"+strings.Repeat("A", maxID+1), "")
	assert.Equal(t, http.StatusBadRequest, code, "%s", body)

	badRequests := testBadRequests(t, h)

	var hl chatapi.Health
	h.getJSON(chatapi.PathHealth, http.StatusOK, &hl)
	assert.Equal(t, "ok", hl.Status)
	assert.Empty(t, hl.Reasons)
	assert.True(t, hl.Redis.Healthy)
	require.Len(t, hl.Queues, chatapi.NumQueues+1, "the pipeline's queues and the paid lane")
	for name, q := range hl.Queues {
		assert.True(t, q.FetcherAlive, name)
	}

	d := h.debug()
	assert.EqualValues(t, chats, d.HTTP.Accepted)
	assert.EqualValues(t, badRequests+1, d.HTTP.BadRequests, "and the malformed id")
	assert.Zero(t, d.HTTP.Unavailable+d.HTTP.Errors)
	assert.Positive(t, d.HTTP.OpenConns, "this test's client keeps its connection")
	assert.EqualValues(t, chats, d.Limiter.Allowed)
	assert.Zero(t, d.Limiter.Denied)
	assert.Equal(t, 2, d.Pool.Blocking.Reserved, "the queue consumer's fetch hub (one connection for its 3 queues) and the agents cache's subscriber")
	assert.Equal(t, d.Pool.Blocking.Reserved, d.Pool.Blocking.Size, "the blocking lane is sized to what the service reserves")
	assert.Zero(t, d.Pool.Request.Timeouts+d.Pool.Request.Rejections)
	assert.EqualValues(t, 1, d.Caches["agents"].Loads)
	assert.Zero(t, d.Caches["replies"].LocalEntries, "replies live in Redis only")
	assert.Positive(t, d.Process.Goroutines)
	assert.Positive(t, d.Process.HeapLive)
	assert.False(t, d.Memwatch.Latest.Time.IsZero())
	assert.Empty(t, d.Memwatch.Alerts)
	names := make([]string, len(d.Tasks))
	for i, task := range d.Tasks {
		names[i] = task.Name
	}
	assert.Contains(t, names, "http server")
	assert.Contains(t, names, "queue chat: fetcher")
	assert.Contains(t, names, "memwatch")
	assert.Len(t, d.Tasks, len(h.g.Tasks()))

	var hist chatapi.History
	h.getJSON(chatapi.PathDebugHistory, http.StatusOK, &hist)
	assert.NotEmpty(t, hist.Samples)
	assert.Equal(t, memwatch.DefaultInterval, hist.Interval)
	assert.Equal(t, memwatch.DefaultHistory, hist.Capacity)

	h.close()
	_, err := h.client.Get(h.url + chatapi.PathHealth)
	assert.Error(t, err, "the listener is closed")
}

// testBadRequests sends requests the service must refuse with a reason, and
// returns how many it counts as bad requests.
func testBadRequests(t *testing.T, h *harness) int {
	long := strings.Repeat("é", 2001) // 4002 bytes, over the 4000-byte default
	cases := []struct {
		name, body string
		code       int
		reason     string
	}{
		{"malformed", `{"user":"ada",`, 400, "malformed JSON"},
		{"not an object", `["ada"]`, 400, "malformed JSON"},
		{"trailing data", `{"user":"ada","agent":"coder","message":"hi"} {}`, 400, "data after the object"},
		{"unknown field", `{"user":"ada","agent":"coder","message":"hi","admin":true}`, 400, `unknown field \"admin\"`},
		{"wrong type", `{"user":1,"agent":"coder","message":"hi"}`, 400, "malformed JSON"},
		{"empty", ``, 400, "malformed JSON"},
		{"missing fields", `{"user":"ada"}`, 400, "missing field(s): agent, message"},
		{"blank user", `{"user":"  ","agent":"coder","message":"hi"}`, 400, "missing field(s): user"},
		{"long user", `{"user":"` + strings.Repeat("u", maxUser+1) + `","agent":"coder","message":"hi"}`, 400, "user is 129 bytes, over the limit of 128"},
		{"oversized message", `{"user":"ada","agent":"coder","message":"` + long + `"}`, 400, "message is 4002 bytes, over the limit of 4000"},
		{"oversized body", `{"user":"ada","agent":"coder","message":"` + strings.Repeat("x", 20_000) + `"}`, 413, "body over"},
		{"unknown agent", `{"user":"ada","agent":"hal","message":"hi"}`, 400, `unknown agent \"hal\"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, hdr, body := h.do(http.MethodPost, chatapi.PathChat, c.body)
			assert.Equal(t, c.code, code, "%s", body)
			assert.Equal(t, "application/json", hdr.Get("Content-Type"))
			var e chatapi.Error
			require.NoError(t, json.Unmarshal(body, &e), "%s", body)
			assert.Contains(t, e.Error, strings.ReplaceAll(c.reason, `\"`, `"`))
			assert.Empty(t, hdr.Get("RateLimit-Limit"), "refused before the limiter")
		})
	}
	// The router's own errors come in the same format.
	code, _, body := h.do(http.MethodGet, chatapi.PathChat, "")
	assert.Equal(t, http.StatusMethodNotAllowed, code)
	assertJSONError(t, body, chatapi.CodeNotAllowed)
	code, _, body = h.do(http.MethodGet, "/nope", "")
	assert.Equal(t, http.StatusNotFound, code)
	assertJSONError(t, body, chatapi.CodeNotFound)
	return len(cases)
}

func TestRateLimit(t *testing.T) {
	m := redistest.Mini(t)
	h := startService(t, "redis://"+m.Addr(), func(c *Config) {
		c.Rate, c.RatePeriod, c.Burst = 1, time.Minute, 2
	})
	h.post("ada", "assistant", "one")
	h.post("ada", "assistant", "two")
	body := `{"user":"ada","agent":"assistant","message":"three"}`
	code, hdr, resp := h.do(http.MethodPost, chatapi.PathChat, body)
	require.Equal(t, http.StatusTooManyRequests, code, "%s", resp)
	assert.Equal(t, "2", hdr.Get("RateLimit-Limit"))
	assert.Equal(t, "0", hdr.Get("RateLimit-Remaining"))
	assert.NotEmpty(t, hdr.Get("RateLimit-Reset"))
	assert.Equal(t, "60", hdr.Get("Retry-After"))
	assert.Equal(t, "application/json", hdr.Get("Content-Type"))
	assertJSONError(t, resp, chatapi.CodeRateLimited)
	h.post("grace", "assistant", "another user has her own budget")

	d := h.debug()
	assert.EqualValues(t, 3, d.Limiter.Allowed)
	assert.EqualValues(t, 1, d.Limiter.Denied)
	assert.EqualValues(t, 3, d.HTTP.Accepted)
}

// assertJSONError checks that body is a chatapi.Error with code and a
// message, and nothing else.
func assertJSONError(t *testing.T, body []byte, code string) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var e chatapi.Error
	if assert.NoError(t, dec.Decode(&e), "%s", body) {
		assert.Equal(t, code, e.Code, "%s", body)
		assert.NotEmpty(t, e.Error, "%s", body)
	}
}

func TestFailedChat(t *testing.T) {
	m := redistest.Mini(t)
	h := startService(t, "redis://"+m.Addr(), func(c *Config) { c.FailRate = 1 })
	id := h.post("ada", "assistant", "this model never answers")
	r := h.reply(id)
	assert.Equal(t, chatapi.StatusFailed, r.Status)
	assert.Equal(t, errModel.Error(), r.Error)
	assert.Equal(t, queue.DefaultMaxAttempts, r.Attempts)
	require.Eventually(t, func() bool {
		d, err := h.tryDebug()
		q := d.Queues[chatapi.QueueChat]
		return err == nil && q.Local != nil && q.Dead == 1 && q.Local.Failed == queue.DefaultMaxAttempts && q.Local.Retried == queue.DefaultMaxAttempts-1
	}, wait, 10*time.Millisecond)
	d := h.debug()
	assert.Zero(t, d.Queues[chatapi.QueueEmbeddings].Local.Processed, "no follow-up for a failed chat")
}

// Redis going away makes /healthz and POST /api/chat answer 503 with the
// reason; once it is back the service is healthy and processes chats again.
// On a real server: miniredis (v2.40.0) never answers a blocking command
// after Restart (its context stays cancelled), so the queues cannot resume.
func TestHealth_RedisDown_Server(t *testing.T) {
	r := redistest.Server(t)
	waitDialProbers(t)
	h := startService(t, r.URL(), func(c *Config) { c.FailRate = 0 })
	testRedisDown(t, h, func() { require.NoError(t, r.Stop()) })

	r.Start()
	require.Eventually(t, func() bool {
		code, _, _, err := h.try(http.MethodGet, chatapi.PathHealth, "")
		return err == nil && code == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "healthy again once Redis is back")
	r2 := h.reply(h.post("ada", "assistant", "back"))
	assert.Equal(t, chatapi.StatusDone, r2.Status)
}

func TestHealth_RedisDown_Mini(t *testing.T) {
	m := redistest.Mini(t)
	waitDialProbers(t)
	h := startService(t, "redis://"+m.Addr(), nil)
	testRedisDown(t, h, m.Close)

	// Closing while Redis is still away: the queue workers cannot confirm
	// that their processing lists are back in the ready lists, so Close
	// says so (their heartbeats expire and another process would sweep
	// them), and still returns by its deadline with nothing left running.
	h.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := h.g.Close(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "putting unfinished jobs back")
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "every task returned by the deadline")
	assert.Empty(t, h.g.Tasks(), "tasks left after Close")
	h.client.Transport.(*http.Transport).CloseIdleConnections()
}

// waitDialProbers registers a cleanup, run after the service has closed,
// that waits for go-redis's dial probers to end. A go-redis pool whose dials
// keep failing starts one (internal/pool tryDial) that retries every second
// until a dial succeeds or the pool is closed, so it outlives Close by up to
// a second: longer than goleak waits.
func waitDialProbers(t *testing.T) {
	t.Cleanup(func() {
		buf := make([]byte, 1<<20)
		require.Eventually(t, func() bool {
			return !bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("pool.(*ConnPool).tryDial"))
		}, 5*time.Second, 20*time.Millisecond, "go-redis dial probers still running")
	})
}

func testRedisDown(t *testing.T, h *harness, stop func()) {
	var hl chatapi.Health
	h.getJSON(chatapi.PathHealth, http.StatusOK, &hl)

	stop()
	h.getJSON(chatapi.PathHealth, http.StatusServiceUnavailable, &hl)
	assert.Equal(t, "unhealthy", hl.Status)
	require.NotEmpty(t, hl.Reasons)
	assert.Contains(t, hl.Reasons[0], "redis: ")
	assert.NotEmpty(t, hl.Redis.Error)

	// A chat cannot be accepted while Redis is away: 503 at once (no dial)
	// once the pool has marked Redis down, in the one error format, with a
	// public message: the error chain is logged, not answered.
	body := `{"user":"ada","agent":"assistant","message":"hi"}`
	var last []byte
	require.Eventually(t, func() bool {
		code, hdr, resp, err := h.try(http.MethodPost, chatapi.PathChat, body)
		last = resp
		var e chatapi.Error
		return err == nil && code == http.StatusServiceUnavailable && hdr.Get("Retry-After") == "1" &&
			json.Unmarshal(resp, &e) == nil && e.Code == chatapi.CodeUnavailable && e.Error != ""
	}, wait, 10*time.Millisecond)
	assert.NotContains(t, string(last), pool.ErrUnavailable.Error(), "no internal error chain in a 503")
	assert.NotContains(t, string(last), "127.0.0.1", "no internal address in a 503")
	d := h.debug()
	assert.Positive(t, d.HTTP.Unavailable)
	assert.Zero(t, d.HTTP.Errors, "Redis being away is a 503, not a 500")
}

func TestHealth_MemoryAlert(t *testing.T) {
	m := redistest.Mini(t)
	h := startService(t, "redis://"+m.Addr(), func(c *Config) {
		c.Memwatch = memwatch.Config{Goroutines: 2, GoroutinesClear: 1} // raised at the first sample
	})
	var hl chatapi.Health
	h.getJSON(chatapi.PathHealth, http.StatusServiceUnavailable, &hl)
	require.Len(t, hl.Alerts, 1)
	assert.Equal(t, memwatch.AlertGoroutines, hl.Alerts[0].Kind)
	require.Len(t, hl.Reasons, 1)
	assert.Contains(t, hl.Reasons[0], "memwatch goroutines: ")
}

// Closing the group while chats run loses none: each is done, or back in
// the ready list for the next process.
func TestShutdown_NothingLost(t *testing.T) {
	m := redistest.Mini(t)
	url := "redis://" + m.Addr()
	// The wait target off: 12 chats for 5 handlers must all be queued.
	h := startService(t, url, func(c *Config) { c.Latency = 100 * time.Millisecond; c.FailRate = 0; c.WaitTarget = -1 })
	const chats = 12
	for i := range chats {
		h.post("ada", "assistant", "slow "+string(rune('a'+i)))
	}
	h.close()

	p, err := pool.New(pool.Config{URL: url})
	require.NoError(t, err)
	defer p.Close()
	q, err := queue.New(p, chatapi.QueueChat, queue.Config{})
	require.NoError(t, err)
	st, err := q.Stats(context.Background())
	require.NoError(t, err)
	done := h.s.workers[0].Stats().Processed
	assert.EqualValues(t, chats, int64(done)+st.Ready, "processed %d, ready %d", done, st.Ready)
	assert.Zero(t, st.InFlight)
}

func TestNewService_BadConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "Config.RedisURL is required"},
		{Config{RedisURL: "redis://127.0.0.1:1", FailRate: 1.5}, "Config.FailRate must be in [0, 1]"},
		{Config{RedisURL: "redis://127.0.0.1:1", Concurrency: -1}, "Config.Concurrency must not be negative"},
		{Config{RedisURL: "redis://127.0.0.1:1", Latency: -time.Second}, "Config.Latency must not be negative"},
		{Config{RedisURL: "http://nope"}, "http"},
	} {
		g := lifecycle.New()
		_, err := newService(g, c.cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), c.want)
		require.NoError(t, g.Close(context.Background()))
	}
}

func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := newLimitListener(inner, 1)
	c1, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	defer c1.Close()
	s1, err := l.Accept()
	require.NoError(t, err)
	assert.Len(t, l.slots, 1, "one connection holds the one slot")
	assert.EqualValues(t, 1, l.open.Load())

	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept() // waits for the slot, then for a client that never comes
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()
	require.NoError(t, s1.Close())
	_ = s1.Close() // closing twice releases the slot once
	assert.Zero(t, l.open.Load())
	require.Eventually(t, func() bool { return len(l.slots) == 1 }, wait, time.Millisecond,
		"the waiting Accept took the freed slot")
	require.NoError(t, l.Close())
	err = <-accepted
	assert.True(t, errors.Is(err, net.ErrClosed), "%v", err)
	assert.Empty(t, l.slots, "a failed Accept gives its slot back")

	_, err = l.Accept()
	assert.True(t, errors.Is(err, net.ErrClosed), "%v", err)
}

// The JSON documents round-trip: the loadtest reads what the service writes.
func TestDebugJSON(t *testing.T) {
	h := startService(t, "redis://"+redistest.Mini(t).Addr(), nil)
	_, _, body := h.do(http.MethodGet, chatapi.PathDebug, "")
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var d chatapi.Debug
	require.NoError(t, dec.Decode(&d), "every field the service writes is in chatapi.Debug")
	for _, name := range chatapi.Queues() {
		require.Contains(t, d.Queues, name)
		require.NotNil(t, d.Queues[name].Local, name)
	}
}

// A Redis whose maxmemory-policy may evict the queues' keys makes /healthz
// say "degraded" (still 200) with the reason, per queue; noeviction is ok.
func TestHealth_EvictingPolicyIsDegraded_Server(t *testing.T) {
	r := redistest.ServerWith(t, redistest.Options{Args: []string{"--maxmemory-policy", "allkeys-lru"}})
	h := startService(t, r.URL(), nil)
	var got chatapi.Health
	h.getJSON(chatapi.PathHealth, http.StatusOK, &got)
	assert.Equal(t, "degraded", got.Status)
	assert.Empty(t, got.Reasons)
	require.NotEmpty(t, got.Queues)
	for name, q := range got.Queues {
		assert.Equal(t, "allkeys-lru", q.Memory.Policy, name)
		assert.True(t, q.Memory.Evicting, name)
	}
	require.Len(t, got.Warnings, len(got.Queues))
	assert.Contains(t, got.Warnings[0], "maxmemory-policy allkeys-lru may evict queue keys")

	ok := redistest.Server(t)
	h2 := startService(t, ok.URL(), nil)
	var fine chatapi.Health
	h2.getJSON(chatapi.PathHealth, http.StatusOK, &fine)
	assert.Equal(t, "ok", fine.Status, "warnings: %v", fine.Warnings)
	assert.Empty(t, fine.Warnings)
}
