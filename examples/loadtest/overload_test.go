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
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/queue"
)

// overloadFake is a service whose chat workers drain capacity chats a
// second (a fluid model, advanced on every request). With shed set it
// answers 503 with Retry-After once a chat would wait more than budget, and
// reports MaxLen; without, it queues everything.
type overloadFake struct {
	capacity float64
	budget   time.Duration
	shed     bool
	noRetry  bool // 503s without Retry-After

	mu        sync.Mutex
	last      time.Time
	backlog   float64
	processed float64
	accepted  uint64
	wait      [chatapi.WaitBuckets]uint64
}

func (f *overloadFake) advance(now time.Time) {
	if !f.last.IsZero() {
		d := min(f.backlog, f.capacity*now.Sub(f.last).Seconds())
		f.backlog -= d
		f.processed += d
	}
	f.last = now
}

func (f *overloadFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(time.Now())
	switch r.URL.Path {
	case chatapi.PathHealth:
		w.WriteHeader(http.StatusOK)
	case chatapi.PathChat:
		wait := time.Duration(f.backlog / f.capacity * float64(time.Second))
		if f.shed && wait > f.budget {
			if !f.noRetry {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(chatapi.Error{Error: "overloaded", Code: chatapi.CodeOverloaded})
			return
		}
		f.backlog++
		f.accepted++
		f.wait[chatapi.WaitBucket(2*time.Millisecond+wait)]++ // 2ms: the fetch, the scheduler
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(chatapi.Accepted{ID: "x", Status: chatapi.StatusPending})
	case chatapi.PathDebug:
		d := chatapi.Debug{Queues: map[string]chatapi.QueueStats{}, ChatWait: chatapi.WaitHistogram{Counts: f.wait[:]}}
		if f.shed {
			d.Shed = chatapi.Shed{Enabled: true, MaxLen: [3]int64{1000, 1000, 1000}}
		}
		done := uint64(f.processed + 0.5)
		for i, name := range chatapi.Queues() {
			q := queue.Stats{Local: &queue.WorkerStats{Processed: done}}
			if i == 0 {
				q.Ready = int64(f.backlog + 0.5)
			}
			d.Queues[name] = chatapi.QueueStats{Stats: q}
		}
		_ = json.NewEncoder(w).Encode(d)
	default:
		http.NotFound(w, r)
	}
}

func startOverloadFake(t *testing.T, f *overloadFake) string {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestRun_Overload_Shedding(t *testing.T) {
	url := startOverloadFake(t, &overloadFake{capacity: 200, budget: time.Millisecond, shed: true})
	var out, errOut bytes.Buffer
	code := run([]string{"overload", "-url", url, "-multiple", "3", "-duration", "1s", "-measure", "1500ms", "-measure-conns", "4",
		"-reference", "1s", "-sample", "100ms", "-max-inflight", "16", "-min-offered", "0", "-drain-timeout", "5s", "-users", "10"}, &out, &errOut)
	s := out.String()
	assert.Equal(t, 0, code, "%s\n%s", s, errOut.String())
	assert.Contains(t, s, "PASS  capacity")
	assert.Contains(t, s, "PASS  backlog")
	assert.Contains(t, s, "limits [1000 1000 1000] (the service's MaxLen)")
	assert.Contains(t, s, "PASS  latency")
	assert.Contains(t, s, "PASS  shed")
	assert.Contains(t, s, "(0 without Retry-After)")
	assert.Contains(t, s, "PASS  no timeouts      0 timed out")
	assert.Contains(t, s, "SKIP  redis memory     no -redis")
	assert.Contains(t, s, "PASS  jobs")
}

// The service as it was: it queues everything, so the backlog has no bound,
// accepted chats wait longer and longer, and nothing is shed.
func TestRun_Overload_Unbounded(t *testing.T) {
	url := startOverloadFake(t, &overloadFake{capacity: 200})
	var out bytes.Buffer
	code := run([]string{"overload", "-url", url, "-capacity", "200", "-multiple", "3", "-duration", "1s",
		"-reference", "500ms", "-sample", "100ms", "-max-inflight", "16", "-min-offered", "0", "-drain-timeout", "0", "-users", "10"}, &out, io.Discard)
	s := out.String()
	assert.Equal(t, 1, code, s)
	assert.Contains(t, s, "capacity of 200/s")
	assert.Contains(t, s, "200 chats/s, given (-capacity)")
	assert.Contains(t, s, "FAIL  backlog")
	assert.Contains(t, s, "limits [0 0 0] (none: the service does not shed and -max-backlog is 0)")
	assert.Contains(t, s, "FAIL  latency")
	assert.Contains(t, s, "FAIL  shed             0 answered 503")
	assert.Contains(t, s, "SKIP  jobs")
}

func TestRun_Overload_MissingRetryAfter(t *testing.T) {
	url := startOverloadFake(t, &overloadFake{capacity: 200, budget: 10 * time.Millisecond, shed: true, noRetry: true})
	var out bytes.Buffer
	code := run([]string{"overload", "-url", url, "-capacity", "200", "-multiple", "3", "-duration", "500ms",
		"-reference", "300ms", "-sample", "100ms", "-max-inflight", "8", "-min-offered", "0", "-drain-timeout", "5s", "-users", "10"}, &out, io.Discard)
	assert.Equal(t, 1, code, out.String())
	assert.Regexp(t, `FAIL  shed +\d+ answered 503 \(\d+ without Retry-After\)`, out.String())
}

// okOverload is a result every check passes.
func okOverload() *overloadResult {
	return &overloadResult{
		cfg:      overloadConfig{multiple: 5, latencyFactor: 2, memorySlack: 4 << 20, interval: time.Second, minOffered: 0.8, measure: 10 * time.Second, measureConns: 64},
		capacity: 1000, measured: true, offered: 5000, achieved: 4900,
		refWait: 3 * time.Millisecond, refWaitN: 5000, overWait: 5 * time.Millisecond, overWaitN: 60000,
		accepted: 60000, shed: 240000,
		limits: [3]int64{10000, 10000, 10000}, limitSource: "the service's MaxLen", maxBacklog: [3]int64{10, 2, 2}, samples: 60,
		memChecked: true, memStart: 4 << 20, memMid: 6 << 20, memEnd: 7 << 20, memMax: 7 << 20,
	}
}

func TestOverloadVerdict(t *testing.T) {
	for _, c := range []struct {
		name   string
		mod    func(*overloadResult)
		check  string
		status string
	}{
		{"all pass", func(*overloadResult) {}, "", statusPass},
		{"backlog over the limit", func(r *overloadResult) { r.maxBacklog[1] = 10001 }, "backlog", statusFail},
		{"no limit", func(r *overloadResult) { r.limits = [3]int64{} }, "backlog", statusFail},
		{"no samples", func(r *overloadResult) { r.samples = 0 }, "backlog", statusFail},
		{"latency over 2x", func(r *overloadResult) { r.overWait = 6*time.Millisecond + 1 }, "latency", statusFail},
		{"latency at 2x", func(r *overloadResult) { r.overWait = 6 * time.Millisecond }, "latency", statusPass},
		{"no reference", func(r *overloadResult) { r.refWaitN = 0 }, "latency", statusFail},
		{"nothing shed", func(r *overloadResult) { r.shed = 0 }, "shed", statusFail},
		{"503 without Retry-After", func(r *overloadResult) { r.shedNoRetryAfter = 1 }, "shed", statusFail},
		{"a timeout", func(r *overloadResult) { r.timeouts = 1 }, "no timeouts", statusFail},
		{"another failure", func(r *overloadResult) { r.failed = 1 }, "no timeouts", statusFail},
		{"redis grows in the second half", func(r *overloadResult) { r.memEnd = r.memMid + 4<<20 + 1 }, "redis memory", statusFail},
		{"redis rises in the first half only", func(r *overloadResult) { r.memMid, r.memEnd = 20<<20, 21<<20 }, "redis memory", statusPass},
		{"no mid sample", func(r *overloadResult) { r.memMid = 0 }, "redis memory", statusFail},
		{"redis error", func(r *overloadResult) { r.memErr = errors.New("down") }, "redis memory", statusFail},
		{"no redis", func(r *overloadResult) { r.memChecked = false }, "redis memory", statusSkip},
		{"could not offer the load", func(r *overloadResult) { r.achieved = 3000 }, "offered", statusFail},
		{"no capacity", func(r *overloadResult) { r.capacity = 0 }, "capacity", statusFail},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := okOverload()
			c.mod(r)
			cs := overloadVerdict(r)
			for _, ch := range cs {
				want := statusPass
				if ch.name == "jobs" {
					want = statusSkip // not checked
				}
				if ch.name == c.check {
					want = c.status
				}
				assert.Equal(t, want, ch.status, "%s: %s", ch.name, ch.detail)
			}
		})
	}
}

func TestParseUsedMemory(t *testing.T) {
	v, err := parseUsedMemory("# Memory\r\nused_memory:1234567\r\nused_memory_human:1.18M\r\n")
	require.NoError(t, err)
	assert.EqualValues(t, 1234567, v)
	_, err = parseUsedMemory("# Memory\r\n")
	assert.Error(t, err)
}

func TestIsTimeout(t *testing.T) {
	assert.True(t, isTimeout(context.DeadlineExceeded))
	assert.True(t, isTimeout(fmt.Errorf("post: %w", &net.OpError{Op: "read", Err: timeoutErr{}})))
	assert.False(t, isTimeout(errors.New("HTTP 503")))
	assert.False(t, isTimeout(context.Canceled))
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestWaitHistogram(t *testing.T) {
	var h chatapi.WaitHistogram
	h.Counts = make([]uint64, chatapi.WaitBuckets)
	for i := 1; i <= 100; i++ {
		h.Counts[chatapi.WaitBucket(time.Duration(i)*time.Millisecond)]++
	}
	p99 := h.Quantile(0.99)
	assert.GreaterOrEqual(t, p99, 99*time.Millisecond)
	assert.LessOrEqual(t, p99, 99*time.Millisecond*9/8)
	old := chatapi.WaitHistogram{Counts: append([]uint64(nil), h.Counts...)}
	h.Counts[chatapi.WaitBucket(time.Second)] += 3
	d := h.Sub(old)
	assert.EqualValues(t, 3, d.Count())
	assert.GreaterOrEqual(t, d.Quantile(0.5), time.Second)
	assert.Zero(t, chatapi.WaitHistogram{}.Quantile(0.99))
	assert.True(t, strings.HasPrefix(fmt.Sprint(chatapi.WaitBucketUpper(0)), "127ns"))
}
