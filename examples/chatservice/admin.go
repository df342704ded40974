package main

import (
	"net/http"

	"github.com/bounded-go/bounded/admin"
	"github.com/bounded-go/bounded/queue"
)

// newAdmin builds the dashboard over the service's queues, pool, caches,
// limiter and memory watcher. It is read-only unless Config.AdminMutations;
// a real service would also set admin.Config.Authorize.
func (s *service) newAdmin() (http.Handler, error) {
	in, err := queue.NewInspector(s.p, "")
	if err != nil {
		return nil, err
	}
	workers := make([]admin.Worker, len(s.workers))
	for i, w := range s.workers {
		workers[i] = w
	}
	return admin.New(admin.Config{
		Inspector:      in,
		Workers:        workers,
		Pools:          map[string]admin.PoolStats{"main": s.p},
		Caches:         map[string]admin.CacheStats{"replies": s.replies, "agents": s.agents},
		Limiters:       map[string]admin.LimiterStats{"chat": s.limiter},
		Memwatch:       s.mem,
		AllowMutations: s.cfg.AdminMutations,
		ErrorLog: func(_ *http.Request, err error) {
			s.log.Warn("admin: a dashboard request failed; answered 500", "component", "admin", "err", err)
		},
	})
}
