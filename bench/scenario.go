package main

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"
)

// Impl is one implementation a case measures: a column of the table.
type Impl int

const (
	// Bounded is this module's package.
	Bounded Impl = iota
	// Peer is the library users compare it with (asynq, redis_rate, ...).
	Peer
	// Reference is what anyone could write by hand, where that says
	// something (a BLMOVE+LREM loop for the queue).
	Reference
	numImpls
)

func (i Impl) String() string {
	switch i {
	case Bounded:
		return "bounded"
	case Peer:
		return "peer"
	case Reference:
		return "reference"
	}
	return fmt.Sprintf("Impl(%d)", int(i))
}

// Sizes are the sizes every scenario reads; flags set them.
type Sizes struct {
	Jobs       int           // jobs per drain
	Rate       int           // jobs/s of the steady-latency run
	RateFor    time.Duration // how long the steady-latency run enqueues
	Pickups    int           // jobs of the idle-pickup run, one at a time
	IdleWindow time.Duration // the idle measuring window: whole 5s block-timeout cycles
	RunFor     time.Duration // how long each timed loop runs (GET loops, Allow loops)
	Keys       int           // distinct keys of the many-keys cases
}

// defaultSizes is what `go run .` measures: the sizes bench/RESULTS.md
// reports, within 10 minutes on a 2-core machine.
func defaultSizes() Sizes {
	return Sizes{
		Jobs:       50_000,
		Rate:       1_000,
		RateFor:    3 * time.Second,
		Pickups:    15,
		IdleWindow: 15 * time.Second,
		RunFor:     2 * time.Second,
		Keys:       10_000,
	}
}

// quickSizes is a smoke run of about a minute.
func quickSizes() Sizes {
	return Sizes{
		Jobs:       5_000,
		Rate:       1_000,
		RateFor:    time.Second,
		Pickups:    4,
		IdleWindow: 5 * time.Second,
		RunFor:     300 * time.Millisecond,
		Keys:       10_000,
	}
}

// Scenario is one comparison: a library of ours against its peer, one table.
type Scenario struct {
	// Name selects the scenario with -scenarios ("queue").
	Name string
	// Order places the scenario's table among the others (lowest first).
	Order int
	// Peer and Reference head their columns ("asynq v0.26.0"). Reference is
	// empty when the scenario has no hand-written reference.
	Peer, Reference string
	// Title is the table's heading.
	Title string
	// Notes are printed under the table: settings, what a metric means,
	// differences that are legitimate.
	Notes []string
	Cases []Case
}

// Case is one row group of a scenario's table: the same workload run by
// each implementation that has a RunFunc.
type Case struct {
	Name string
	// Bounded, Peer and Reference run the workload once each; nil leaves
	// the implementation out.
	Bounded, Peer, Reference RunFunc
	// Isolated gives each implementation a fresh redis-server of its own and
	// runs them all at once: for measurements that are counts over a fixed
	// window (idle traffic), which timing noise does not change, and which a
	// shared server would mix up.
	Isolated bool
	// Timeout bounds one run; zero means defaultRunTimeout. A run that
	// loses a job waits for it until then and fails.
	Timeout time.Duration
}

// RunFunc runs a case once for one implementation on r.Redis, which was
// reset before (no data, no scripts, zeroed stats), and records what it
// measured and checked on r. An error means the run could not be done.
type RunFunc func(ctx context.Context, r *Run) error

const defaultRunTimeout = 3 * time.Minute

func (c Case) run(i Impl) RunFunc {
	switch i {
	case Bounded:
		return c.Bounded
	case Peer:
		return c.Peer
	case Reference:
		return c.Reference
	}
	return nil
}

// impls returns the implementations the case has, in column order.
func (c Case) impls() []Impl {
	var out []Impl
	for i := range numImpls {
		if c.run(i) != nil {
			out = append(out, i)
		}
	}
	return out
}

// rotate returns the order of the runs of one repetition: each repetition
// starts with the next implementation, so none always runs first (on a cold
// server, or right after a heavier run).
func rotate(impls []Impl, rep int) []Impl {
	if len(impls) == 0 {
		return nil
	}
	k := rep % len(impls)
	return append(slices.Clone(impls[k:]), impls[:k]...)
}

// Run is one run of a case by one implementation.
type Run struct {
	Impl  Impl
	Redis *Server
	Sizes Sizes
	Rep   int

	res   *Results
	scen  *Scenario
	cname string
}

// Better says which way a metric is good.
type Better int

const (
	Higher Better = iota // throughput
	Lower                // latency, commands, connections
	Equal                // a count that must match (decisions, jobs)
)

// Record adds one measurement of metric (unit included: "jobs/s", "p99 ms").
func (r *Run) Record(metric string, better Better, v float64) {
	r.res.record(r.scen, r.cname, metric, better, r.Impl, v)
}

// Check records a correctness check; a failed one makes the program exit
// non-zero. It reports ok.
func (r *Run) Check(ok bool, format string, args ...any) bool {
	r.res.check(r.scen, ok, fmt.Sprintf("%s, %s, %s, rep %d: %s", r.scen.Name, r.cname, r.column(), r.Rep+1, fmt.Sprintf(format, args...)))
	return ok
}

// Note adds a line under the scenario's table, once however often it is
// added (a peer's logged errors, say).
func (r *Run) Note(format string, args ...any) {
	r.res.note(r.scen, fmt.Sprintf(format, args...))
}

// column names the run's implementation as its table column does.
func (r *Run) column() string { return r.scen.column(r.Impl) }

func (s *Scenario) column(i Impl) string {
	switch i {
	case Peer:
		return s.Peer
	case Reference:
		return s.Reference
	}
	return "bounded"
}

// catalog's methods are the scenarios: each scenario's file adds one method
// `func (catalog) Name(Sizes) Scenario`, and allScenarios finds them by
// reflection. A new scenario is therefore one new file and nothing else: no
// list to edit, no init() and no package-level registry.
type catalog struct{}

// allScenarios returns every scenario of the catalog, in Order.
func allScenarios(sz Sizes) []Scenario {
	v := reflect.ValueOf(catalog{})
	var out []Scenario
	for i := range v.NumMethod() {
		build, ok := v.Method(i).Interface().(func(Sizes) Scenario)
		if !ok {
			panic(fmt.Sprintf("catalog.%s must be a func(Sizes) Scenario", v.Type().Method(i).Name))
		}
		out = append(out, build(sz))
	}
	slices.SortStableFunc(out, func(a, b Scenario) int {
		return cmp.Or(cmp.Compare(a.Order, b.Order), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// selectScenarios returns the scenarios named in names (all when empty), in
// Order, or an error naming the unknown ones and the known ones.
func selectScenarios(all []Scenario, names []string) ([]Scenario, error) {
	if len(names) == 0 {
		return all, nil
	}
	var out []Scenario
	var unknown []string
	for _, n := range names {
		i := slices.IndexFunc(all, func(s Scenario) bool { return s.Name == n })
		if i < 0 {
			unknown = append(unknown, n)
			continue
		}
		if !slices.ContainsFunc(out, func(s Scenario) bool { return s.Name == n }) {
			out = append(out, all[i])
		}
	}
	if len(unknown) > 0 {
		known := make([]string, len(all))
		for i, s := range all {
			known[i] = s.Name
		}
		return nil, fmt.Errorf("unknown scenario %q (known: %q)", unknown, known)
	}
	slices.SortStableFunc(out, func(a, b Scenario) int { return cmp.Compare(a.Order, b.Order) })
	return out, nil
}
