package prometheus_test

import (
	"strings"
	"testing"

	prom "github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
	"github.com/bounded-go/bounded/ratelimit"
)

// Two components of one kind with one name in a collector would give two
// samples the same labels, and fail every Gather: Register refuses the
// collector with an error that names them, and Collect yields only that
// error.
func TestCollectorsRefuseDuplicateNames(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	limiter := func(name string) *ratelimit.Limiter {
		l, err := ratelimit.New(p, name, ratelimit.Config{Rate: 1})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for name, tc := range map[string]struct {
		dup, ok prom.Collector
		want    string
	}{
		"caches": {
			dup:  bprom.NewCacheCollector(fakeCache{name: "users"}, fakeCache{name: "orders"}, fakeCache{name: "users"}),
			ok:   bprom.NewCacheCollector(fakeCache{name: "users"}, fakeCache{name: "orders"}),
			want: `NewCacheCollector: caches 0 and 2 are both named "users"`,
		},
		"limiters": {
			dup:  bprom.NewLimiterCollector(limiter("login"), limiter("login")),
			ok:   bprom.NewLimiterCollector(limiter("login"), limiter("signup")),
			want: `NewLimiterCollector: limiters 0 and 1 are both named "login"`,
		},
		"queues": {
			dup:  bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{newQueue(t, p, "mail"), newQueue(t, p, "mail")}}),
			ok:   bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{newQueue(t, p, "mail"), newQueue(t, p, "sms")}}),
			want: `NewQueueCollector: queues 0 and 1 are both named "mail"`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := prom.NewPedanticRegistry().Register(tc.dup)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Register: %v, want an error with %q", err, tc.want)
			}
			ch := make(chan prom.Metric, 100)
			tc.dup.Collect(ch)
			close(ch)
			n := 0
			for m := range ch {
				n++
				if err := m.Write(&dto.Metric{}); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Collect: a metric whose Write says %v, want the error", err)
				}
			}
			if n != 1 {
				t.Fatalf("Collect sent %d metrics, want the error alone", n)
			}
			if err := prom.NewPedanticRegistry().Register(tc.ok); err != nil {
				t.Fatalf("distinct names refused: %v", err)
			}
		})
	}
}
