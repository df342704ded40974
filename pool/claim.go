package pool

import "sync"

// claims are the names held in a pool (Claim).
type claims struct {
	mu   sync.Mutex
	held map[string]struct{}
}

// Claim holds name in this pool until the returned release is called, and
// reports false (with a nil release) when it is held already. It is for
// what must run once per Redis in a process, which the pool, built once
// per process and Redis and shared, is the value to know: a queue Consumer
// claims its consumer ID, so that a second Consumer with that ID on the
// same pool is refused instead of overwriting the first's incarnation in
// Redis. Names are compared as they are: start them with the claiming
// package's name. release may be called more than once. Claim does not talk
// to Redis, and works on a closed pool.
func (p *Pool) Claim(name string) (release func(), ok bool) {
	c := &p.claims
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, held := c.held[name]; held {
		return nil, false
	}
	if c.held == nil {
		c.held = map[string]struct{}{}
	}
	c.held[name] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.held, name)
			c.mu.Unlock()
		})
	}, true
}
