package main

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemoServesMetrics runs the demo on an embedded Redis until its
// workers have run jobs, scrapes /metrics, and stops it.
func TestDemoServesMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-redis", "", "-rate", "200", "-latency", "1ms"}, io.Discard, listening)
	}()
	var addr string
	select {
	case addr = <-listening:
	case err := <-done:
		t.Fatalf("demo ended before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not listen within 10s")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		body = string(b)
		if strings.Contains(body, `bounded_queue_jobs_processed_total{queue="webhooks"}`) &&
			!strings.Contains(body, `bounded_queue_jobs_processed_total{queue="webhooks"} 0`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no webhook processed within 10s; /metrics:\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{
		`bounded_queue_start_delay_seconds_bucket{queue="chat",le="0.01"}`,
		`bounded_queue_run_duration_seconds_count{queue="chat"}`,
		`bounded_pool_wait_seconds_bucket{lane="request",le="+Inf"}`,
		`bounded_cache_loads_total{cache="agents"}`,
		`bounded_ratelimit_allowed_total{limiter="chat",source="redis"}`,
		`bounded_memwatch_heap_live_bytes`,
		`bounded_queue_oldest_ready_age_seconds{queue="chat"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo: %v", err)
		}
	case <-time.After(15 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("demo did not stop within 15s:\n%s", buf[:runtime.Stack(buf, true)])
	}
}

func TestDemoBadFlags(t *testing.T) {
	// A rate whose tick rounds to 0ns (or NaN) passed the check and made
	// time.NewTicker panic in the load task once everything had started.
	for _, args := range [][]string{{"-rate", "0"}, {"-fail-rate", "2"}, {"-latency", "-1s"}, {"-nope"},
		{"-rate", "NaN"}, {"-rate", "+Inf"}, {"-rate", "3e9"}, {"-fail-rate", "NaN"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := run(ctx, append(args, "-addr", "127.0.0.1:0", "-redis", ""), io.Discard, nil)
		cancel()
		if err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
