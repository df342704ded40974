package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/queue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, c := range []struct {
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.01, 7 * time.Millisecond},
		{ms(7), 1, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond}, // nearest rank: ceil(0.5*4) = 2nd
		{ms(1, 2, 3, 4), 0.51, 3 * time.Millisecond},
		{ms(1, 2, 3, 4), 1, 4 * time.Millisecond},
		{hundred, 0.99, 99 * time.Millisecond},
		{hundred, 0.9, 90 * time.Millisecond},
		{hundred, 0.001, time.Millisecond},
	} {
		assert.Equal(t, c.want, percentile(c.sorted, c.q), "q=%g of %v", c.q, c.sorted)
	}

	l := summarize(ms(5, 1, 4, 2, 3))
	assert.Equal(t, latencies{n: 5, p50: 3 * time.Millisecond, p90: 5 * time.Millisecond, p99: 5 * time.Millisecond,
		max: 5 * time.Millisecond, mean: 3 * time.Millisecond}, l)
	assert.Equal(t, latencies{}, summarize(nil))
}

func TestTheilSen(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 300
	xs := make([]float64, n)
	flat, growing := make([]float64, n), make([]float64, n)
	for i := range n {
		xs[i] = float64(i)
		noise := rng.NormFloat64() * 50_000
		flat[i] = 4e6 + noise
		growing[i] = 4e6 + 1000*float64(i) + noise
	}
	// A few GC spikes barely move it.
	for _, i := range []int{10, 100, 200} {
		flat[i] += 3e6
	}
	slope, agree, ok := theilSen(xs, flat)
	require.True(t, ok)
	assert.InDelta(t, 0, slope, 300, "flat noise with spikes")
	assert.InDelta(t, 0.5, agree, 0.1)
	// Nor does a one-off step (a cache filled at once), much.
	for i := 250; i < n; i++ {
		flat[i] += 100_000
	}
	slope, _, _ = theilSen(xs, flat)
	assert.Less(t, slope*60, 100_000.0, "less than the step per minute")

	slope, agree, ok = theilSen(xs, growing)
	require.True(t, ok)
	assert.InDelta(t, 1000, slope, 100)
	assert.Greater(t, agree, 0.8)

	_, _, ok = theilSen([]float64{1, 1, 1}, []float64{1, 2, 3})
	assert.False(t, ok, "no pair with distinct x")
	_, _, ok = theilSen(nil, nil)
	assert.False(t, ok)

	// Long inputs are thinned, not refused.
	long := make([]float64, 5000)
	lys := make([]float64, 5000)
	for i := range long {
		long[i], lys[i] = float64(i), 3*float64(i)
	}
	slope, _, ok = theilSen(long, lys)
	require.True(t, ok)
	assert.InDelta(t, 3, slope, 1e-9)
}

// soakOf builds a soak result of n one-second samples of a service whose
// live heap follows heap(t) and goroutines follow gr(t).
func soakOf(n int, heap, gr func(t float64) float64) *soakResult {
	r := &soakResult{
		cfg:      soakConfig{rate: 100, duration: time.Duration(n) * time.Second, heapGrowth: 0.01, goroutineSlack: 5},
		loadEnd:  float64(n - 1),
		sent:     uint64(100 * n),
		accepted: uint64(100 * n),
		settled:  true,
		drain:    drain{checked: true, settled: true, processed: [3]uint64{uint64(100 * n), uint64(100 * n), uint64(100 * n)}},
		errs:     newErrorKinds(10),
	}
	for i := range n {
		t := float64(i)
		r.samples = append(r.samples, sample{T: t, HeapLive: heap(t), RSS: 20 << 20, Goroutines: gr(t)})
	}
	r.baseGoroutines, r.endGoroutines = int(gr(0)), int(gr(0))
	return r
}

func statusOf(cs []check, name string) string {
	for _, c := range cs {
		if c.name == name {
			return c.status
		}
	}
	return "missing"
}

func TestVerdict(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	flatHeap := func(float64) float64 { return 4<<20 + rng.NormFloat64()*100_000 }
	flatGr := func(float64) float64 { return 60 + float64(rng.IntN(3)) }

	r := soakOf(600, flatHeap, flatGr)
	cs := verdict(r)
	for _, c := range cs {
		assert.Equal(t, statusPass, c.status, "%s: %s", c.name, c.detail)
	}

	// 2 % of 4 MiB a minute, steadily: a leak.
	r = soakOf(600, func(t float64) float64 { return 4<<20 + t*0.02*(4<<20)/60 + rng.NormFloat64()*10_000 }, flatGr)
	assert.Equal(t, statusFail, statusOf(verdict(r), "live heap slope"))

	// 1.5 % a minute under the flat case's noise: still a leak.
	r = soakOf(600, func(t float64) float64 { return 4<<20 + t*0.015*(4<<20)/60 + rng.NormFloat64()*100_000 }, flatGr)
	assert.Equal(t, statusFail, statusOf(verdict(r), "live heap slope"))

	// Steps of the live heap (connections opened in two latency spikes) over
	// a flat heap move the median slope but not most pairs: not a leak.
	r = soakOf(600, func(t float64) float64 {
		h := 4<<20 + rng.NormFloat64()*20_000
		if t > 380 {
			h += 200_000
		}
		if t > 420 {
			h += 200_000
		}
		return h
	}, flatGr)
	cs = verdict(r)
	assert.Equal(t, statusPass, statusOf(cs, "live heap slope"), "%v", cs)

	// Connections come and go; the service's own goroutines stay flat.
	r = soakOf(600, flatHeap, func(t float64) float64 { return 60 + t/10 })
	for i := range r.samples {
		r.samples[i].Conns = r.samples[i].T / 10
	}
	assert.Equal(t, statusPass, statusOf(verdict(r), "goroutines"))

	// One goroutine more every ten seconds.
	r = soakOf(600, flatHeap, func(t float64) float64 { return 60 + t/10 })
	r.endGoroutines = 120
	r.settled = false
	assert.Equal(t, statusFail, statusOf(verdict(r), "goroutines"))
	// Growth during the run fails even when the count came back down.
	r.endGoroutines, r.settled = 60, true
	assert.Equal(t, statusFail, statusOf(verdict(r), "goroutines"))

	r = soakOf(600, flatHeap, flatGr)
	r.failed = 1
	assert.Equal(t, statusFail, statusOf(verdict(r), "requests"))
	r = soakOf(600, flatHeap, flatGr)
	r.accepted, r.limited = 0, r.sent // everything 429: nothing exercised
	assert.Equal(t, statusFail, statusOf(verdict(r), "requests"))
	// Chats shed by the service (503 overloaded) fail the soak unless
	// -max-shed allows that fraction of those sent.
	r = soakOf(600, flatHeap, flatGr)
	r.sent, r.shed = 8000, 3
	assert.Equal(t, statusFail, statusOf(verdict(r), "requests"), "no shedding allowed by default")
	r.cfg.maxShed = 0.005
	assert.Equal(t, statusPass, statusOf(verdict(r), "requests"), "3 of 8000 is within 0.5 %")
	r.shed = 41
	assert.Equal(t, statusFail, statusOf(verdict(r), "requests"), "41 of 8000 is over 0.5 %")
	r.shed, r.failed = 0, 1
	assert.Equal(t, statusFail, statusOf(verdict(r), "requests"), "other failures are never allowed")

	r = soakOf(600, flatHeap, flatGr)
	r.drain.processed[1]-- // one embedding missing
	assert.Equal(t, statusFail, statusOf(verdict(r), "jobs"))
	r = soakOf(600, flatHeap, flatGr)
	r.drain.dead[0] = 1
	assert.Equal(t, statusFail, statusOf(verdict(r), "jobs"))
	r.drain.checked = false
	assert.Equal(t, statusSkip, statusOf(verdict(r), "jobs"))

	r = soakOf(600, flatHeap, flatGr)
	r.cfg.maxHeap, r.cfg.maxRSS = 8<<20, 16<<20
	cs = verdict(r)
	assert.Equal(t, statusPass, statusOf(cs, "max live heap"))
	assert.Equal(t, statusFail, statusOf(cs, "max RSS"), "RSS is 20 MiB")

	// Too short to fit a slope: skipped, not passed or failed.
	r = soakOf(40, flatHeap, flatGr)
	assert.Equal(t, statusSkip, statusOf(verdict(r), "live heap slope"))
	// Nor the goroutine trend: a short run is judged on the count after it.
	r = soakOf(40, flatHeap, func(t float64) float64 { return 60 + t/4 })
	assert.Equal(t, statusPass, statusOf(verdict(r), "goroutines"))
	r.endGoroutines = 66
	assert.Equal(t, statusFail, statusOf(verdict(r), "goroutines"))
	r = soakOf(1, flatHeap, flatGr)
	assert.Equal(t, statusFail, statusOf(verdict(r), "samples"))
}

func TestRisingParts(t *testing.T) {
	r, n := risingParts([]float64{1, 1, 2, 2, 3, 3, 4, 4, 5, 5}, 5, 0)
	assert.Equal(t, [2]int{4, 4}, [2]int{r, n})
	r, n = risingParts([]float64{1, 1, 2, 2, 3, 3, 4, 4, 5, 5}, 5, 1)
	assert.Equal(t, [2]int{0, 4}, [2]int{r, n}, "rises of 1 are not over 1")
	r, n = risingParts([]float64{1, 1, 1, 1, 9, 9, 9, 9, 9, 9}, 5, 0) // one step
	assert.Equal(t, [2]int{1, 4}, [2]int{r, n})
	r, n = risingParts([]float64{5, 4, 3, 2, 1}, 5, 0)
	assert.Equal(t, [2]int{0, 4}, [2]int{r, n})
	r, n = risingParts([]float64{1, 2}, 5, 0)
	assert.Equal(t, [2]int{0, 0}, [2]int{r, n})
}

func TestLoadSamples(t *testing.T) {
	r := &soakResult{loadEnd: 2.5}
	for _, ts := range []float64{0, 1, 2, 2.5, 3, 4} {
		r.samples = append(r.samples, sample{T: ts})
	}
	assert.Len(t, r.loadSamples(), 4)
	assert.Equal(t, []sample{{T: 2}, {T: 2.5}}, secondHalf(r.loadSamples(), 4))
	assert.Nil(t, secondHalf(r.loadSamples(), 100))
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"": 0, "123": 123, "8MiB": 8 << 20, "40 MiB": 40 << 20, "1.5KiB": 1536,
		"2GiB": 2 << 30, "3MB": 3e6, "7B": 7} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"x", "MiB", "-1MiB", "8 TiB", "NaN"} {
		_, err := parseSize(in)
		assert.Error(t, err, in)
	}
}

func TestNiceAxes(t *testing.T) {
	for v, want := range map[float64]float64{0: 1, -3: 1, 0.3: 0.5, 1: 1, 1.01: 2, 7: 10, 40: 50, 101: 200, 230: 250, 6.9e6: 1e7} {
		assert.InDelta(t, want, niceCeil(v), want*1e-9, "niceCeil(%g)", v)
	}
	assert.Equal(t, 1.0, niceStep(8, 8))
	assert.Equal(t, 2.0, niceStep(9, 8))
	assert.Equal(t, 120.0, niceStep(600, 8))
	assert.Equal(t, 3*86400.0, niceStep(20*86400, 8))
	assert.Equal(t, "1500", fmtNum(1500))
	assert.Equal(t, "950", fmtNum(950))
	assert.Equal(t, "15k", fmtNum(15000))
	assert.Equal(t, "2.25M", fmtNum(2.25e6))
	assert.Equal(t, "1m30s", fmtSeconds(90))
}

func TestDownsample(t *testing.T) {
	xs, ys := []float64{0, 1, 2, 3, 4, 5, 6}, []float64{1, 9, 2, 3, 8, 1, 4}
	ox, oy := downsample(xs, ys, 10)
	assert.Equal(t, xs, ox)
	assert.Equal(t, ys, oy)
	ox, oy = downsample(xs, ys, 3) // buckets of 3: {1,9,2} {3,8,1} {4}
	assert.Equal(t, []float64{0, 3, 6}, ox)
	assert.Equal(t, []float64{9, 8, 4}, oy, "each bucket keeps its spike")
}

// svgDoc is the part of the SVG the test reads back.
type svgDoc struct {
	XMLName xml.Name `xml:"svg"`
	Title   string   `xml:"title"`
	Texts   []string `xml:"text"`
	Groups  []struct {
		Texts     []string `xml:"text"`
		Polylines []struct {
			Series string `xml:"data-series,attr"`
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	} `xml:"g"`
}

func TestSVG(t *testing.T) {
	r := soakOf(30, func(t float64) float64 { return 4<<20 + t*1000 }, func(float64) float64 { return 60 })
	r.url = "http://127.0.0.1:8080/?a=1&b=<2>" // must be escaped
	r.samples[3].Limited = 5
	for i := range r.samples {
		r.samples[i].Accepted = float64(100 * i)
		r.samples[i].Queued = [3]float64{float64(i), 0, 1}
	}
	var buf bytes.Buffer
	require.NoError(t, soakChart(r).writeSVG(&buf))
	out := buf.String()

	// Well-formed XML, every token.
	dec := xml.NewDecoder(strings.NewReader(out))
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
	}
	var doc svgDoc
	require.NoError(t, xml.Unmarshal(buf.Bytes(), &doc))
	assert.Equal(t, "chatservice soak", doc.Title)
	require.Len(t, doc.Groups, 6, "one group per panel")
	var names []string
	for _, g := range doc.Groups {
		for _, p := range g.Polylines {
			names = append(names, p.Series)
			pts := strings.Fields(p.Points)
			require.NotEmpty(t, pts, p.Series)
			for _, pt := range pts {
				x, y, err := parsePoint(pt)
				require.NoError(t, err, pt)
				assert.True(t, y >= marginTop && y <= float64(len(doc.Groups)*(panelHeight+panelGap)+marginTop), "y %g on the chart", y)
				assert.True(t, x >= marginLeft && x <= svgWidth-marginRight+0.1, "x %g in the plot", x)
			}
		}
	}
	assert.Equal(t, []string{"heap live", "rss", "goroutines", "HTTP connections", "own (not conns)", "pool waiting", "chat", "embeddings", "webhooks",
		"202 accepted", "429 limited", "failed"}, names)
	assert.Contains(t, doc.Groups[0].Texts, "Live heap (MiB)")
	assert.Contains(t, doc.Groups[0].Texts, "load stops")
	assert.Contains(t, out, "a=1&amp;b=&lt;2&gt;")
	assert.NotContains(t, out, "<script")
	assert.NotContains(t, out, "href", "self-contained: no external resource")
	// The first rate point has no predecessor and is left out.
	rates := doc.Groups[5].Polylines[0].Points
	assert.Len(t, strings.Fields(rates), len(r.samples)-1)

	// An empty chart is still valid.
	buf.Reset()
	require.NoError(t, chart{title: "empty", panels: []panel{{"nothing", []series{{"none", nil}}}}}.writeSVG(&buf))
	require.NoError(t, xml.Unmarshal(buf.Bytes(), &doc))
}

// parsePoint parses "x,y" of a polyline, requiring finite numbers.
func parsePoint(pt string) (x, y float64, err error) {
	a, b, ok := strings.Cut(pt, ",")
	if !ok {
		return 0, 0, errors.New("no comma")
	}
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	if math.IsNaN(x+y) || math.IsInf(x+y, 0) {
		return 0, 0, errors.New("not finite")
	}
	return x, y, nil
}

// fakeService answers like chatservice: 202 for chats (429 for user-0 when
// limit is set, 500 for user-1 when broken is set), and a /debug/bounded
// whose queues have processed every accepted chat.
type fakeService struct {
	limit, broken bool
	accepted      atomic.Uint64
	mu            sync.Mutex
	users         map[string]int
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case chatapi.PathHealth:
		w.WriteHeader(http.StatusOK)
	case chatapi.PathChat:
		var req chatapi.ChatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Message == "" || req.Agent == "" {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.users[req.User]++
		f.mu.Unlock()
		switch {
		case f.limit && req.User == "user-0":
			http.Error(w, "limited", http.StatusTooManyRequests)
		case f.broken && req.User == "user-1":
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			f.accepted.Add(1)
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(chatapi.Accepted{ID: "x", Status: chatapi.StatusPending})
		}
	case chatapi.PathDebug:
		n := f.accepted.Load()
		d := chatapi.Debug{Process: chatapi.Process{Goroutines: 40, HeapLive: 3 << 20, RSS: 20 << 20}, Queues: map[string]chatapi.QueueStats{}}
		for _, name := range chatapi.Queues() {
			d.Queues[name] = chatapi.QueueStats{Stats: queue.Stats{Local: &queue.WorkerStats{Processed: n}}}
		}
		_ = json.NewEncoder(w).Encode(d)
	default:
		http.NotFound(w, r)
	}
}

func startFake(t *testing.T, f *fakeService) common {
	f.users = make(map[string]int)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return common{url: srv.URL, users: 10, messageBytes: 10, timeout: 5 * time.Second, wait: 5 * time.Second, drainTimeout: 5 * time.Second}
}

func TestBurst(t *testing.T) {
	f := &fakeService{limit: true, broken: true}
	cfg := startFake(t, f)
	cl := newClient(cfg, 4)
	defer cl.close()
	var calls atomic.Int64
	res := burst(context.Background(), cl, 100, 4, func(done, failed int, _ time.Duration) { calls.Add(1) })
	assert.Equal(t, 80, res.accepted)
	assert.Equal(t, 10, res.limited, "user-0 of 10 users, round-robin")
	assert.Equal(t, 10, res.failed)
	assert.Len(t, res.lat, 100)
	assert.Positive(t, calls.Load())
	f.mu.Lock()
	assert.Len(t, f.users, 10)
	f.mu.Unlock()

	var out bytes.Buffer
	assert.False(t, res.print(&out, true), "500s fail the burst")
	assert.Contains(t, out.String(), "10 x HTTP 500: boom")

	f.broken = false
	res = burst(context.Background(), cl, 50, 4, func(int, int, time.Duration) {})
	assert.False(t, res.print(io.Discard, false), "429 fails without -ok-429")
	assert.True(t, res.print(io.Discard, true))
}

func TestRun_Burst(t *testing.T) {
	cfg := startFake(t, &fakeService{})
	var out, errOut bytes.Buffer
	code := run([]string{"burst", "-url", cfg.url, "-n", "200", "-c", "8", "-drain-timeout", "5s"}, &out, &errOut)
	assert.Equal(t, 0, code, "%s\n%s", out.String(), errOut.String())
	assert.Contains(t, out.String(), "202: 200   429: 0   failed: 0")
	assert.Contains(t, out.String(), "chat +200, embeddings +200, webhooks +200 processed")
	assert.Contains(t, out.String(), "PASS")
}

func TestRun_Soak(t *testing.T) {
	cfg := startFake(t, &fakeService{limit: true})
	chartFile := t.TempDir() + "/soak.svg"
	var out, errOut bytes.Buffer
	code := run([]string{"soak", "-url", cfg.url, "-rate", "100", "-duration", "2s", "-sample", "200ms",
		"-users", "10", "-chart", chartFile, "-max-heap", "8MiB"}, &out, &errOut)
	assert.Equal(t, 0, code, "%s\n%s", out.String(), errOut.String())
	s := out.String()
	assert.Contains(t, s, "PASS  requests")
	assert.Contains(t, s, "20 limited (429), 0 shed (503, -max-shed 0), 0 failed otherwise", "429s do not fail a soak")
	assert.Contains(t, s, "SKIP  live heap slope")
	assert.Contains(t, s, "PASS  goroutines       40 before the load, 40 after it")
	assert.Contains(t, s, "PASS  jobs             chat +180, embeddings +180, webhooks +180")
	assert.Contains(t, s, "PASS  max live heap")
	assert.Contains(t, s, "chart: "+chartFile)
}

func TestRun_SoakFailsOnErrors(t *testing.T) {
	cfg := startFake(t, &fakeService{broken: true})
	var out bytes.Buffer
	code := run([]string{"soak", "-url", cfg.url, "-rate", "50", "-duration", "1s", "-users", "10"}, &out, io.Discard)
	assert.Equal(t, 1, code, out.String())
	assert.Contains(t, out.String(), "FAIL  requests")
	assert.Contains(t, out.String(), "HTTP 500: boom")
}

func TestRun_BadArgs(t *testing.T) {
	for _, args := range [][]string{
		nil, {"nope"}, {"burst", "-n", "0"}, {"soak", "-rate", "0"}, {"soak", "-max-rss", "lots"}, {"burst", "-users", "0"},
	} {
		assert.Equal(t, 2, run(args, io.Discard, io.Discard), "%q", args)
	}
	// A service that never answers: the tool says so and exits 1.
	assert.Equal(t, 1, run([]string{"burst", "-url", "http://127.0.0.1:1", "-wait", "300ms"}, io.Discard, io.Discard))
}

func TestCountsOf(t *testing.T) {
	_, err := countsOf(chatapi.Debug{})
	assert.ErrorContains(t, err, `no queue "chat"`)
	d := chatapi.Debug{Queues: map[string]chatapi.QueueStats{}}
	for _, name := range chatapi.Queues() {
		d.Queues[name] = chatapi.QueueStats{Stats: queue.Stats{Ready: 2, Delayed: 1, InFlight: 1, Local: &queue.WorkerStats{Processed: 7, Dead: 1}}}
	}
	c, err := countsOf(d)
	require.NoError(t, err)
	assert.Equal(t, jobCounts{processed: [3]uint64{7, 7, 7}, dead: [3]uint64{1, 1, 1}, waiting: [3]int64{4, 4, 4}}, c)
	d.Queues["webhooks"] = chatapi.QueueStats{Error: "redis down"}
	_, err = countsOf(d)
	assert.ErrorContains(t, err, "queue webhooks: redis down")
	d.Queues["webhooks"] = chatapi.QueueStats{}
	_, err = countsOf(d)
	assert.ErrorContains(t, err, "no worker")
}
