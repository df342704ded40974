package prometheus

import (
	"fmt"
	"reflect"
	"strconv"

	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/bounded-go/bounded/pool"
)

// metric is one family a collector emits: its descriptor and its type.
type metric struct {
	desc *prom.Desc
	kind prom.ValueType
}

func newMetric(kind prom.ValueType, name, help string, labels ...string) metric {
	return metric{desc: prom.NewDesc(name, help, labels, nil), kind: kind}
}

func counter(name, help string, labels ...string) metric {
	return newMetric(prom.CounterValue, name, help, labels...)
}

func gauge(name, help string, labels ...string) metric {
	return newMetric(prom.GaugeValue, name, help, labels...)
}

// emit sends one sample of m. A label value Prometheus refuses (a name
// that is not valid UTF-8) is sent as an invalid metric: the scrape
// reports the error; a panic here would end the process (the registry
// collects on goroutines of its own).
func (m metric) emit(ch chan<- prom.Metric, v float64, labels ...string) {
	s, err := prom.NewConstMetric(m.desc, m.kind, v, labels...)
	if err != nil {
		s = prom.NewInvalidMetric(m.desc, err)
	}
	ch <- s
}

func describe(ch chan<- *prom.Desc, ms ...metric) {
	for _, m := range ms {
		ch <- m.desc
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func histogram(name, help string, labels ...string) metric {
	return newMetric(prom.UntypedValue, name, help, labels...) // kind unused: see emitHistogram
}

// emitHistogram sends h as a Prometheus histogram in seconds (the bounds
// are bounded's fixed ones, the same for every series).
func (m metric) emitHistogram(ch chan<- prom.Metric, h pool.Histogram, labels ...string) {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		if i < len(h.Counts) {
			buckets[b.Seconds()] = h.Counts[i]
		}
	}
	s, err := prom.NewConstHistogram(m.desc, h.Count, h.Sum, buckets, labels...)
	if err != nil { // as in emit
		s = prom.NewInvalidMetric(m.desc, err)
	}
	ch <- s
}

// distinct returns an error naming the first component of cs that is nil
// (a component whose New failed, left in the list: reading it would
// panic) or whose name, by name, appears twice: their samples would have
// the same labels, and every Gather would fail. name returns what labels
// the component's samples, as the error shows it.
func distinct[T any](fn, kind string, cs []T, name func(T) string) error {
	seen := make(map[string]int, len(cs))
	for i, c := range cs {
		if isNil(c) {
			return fmt.Errorf("contrib/prometheus: %s: %s %d is nil", fn, kind, i)
		}
		n := name(c)
		if j, ok := seen[n]; ok {
			return fmt.Errorf("contrib/prometheus: %s: %ss %d and %d are both named %s: names must be distinct", fn, kind, j, i, n)
		}
		seen[n] = i
	}
	return nil
}

// quoted is a component's name as distinct shows it.
func quoted[T interface{ Name() string }](c T) string { return strconv.Quote(c.Name()) }

// isNil reports whether c is nil: a nil interface, pointer, or a non-nil
// interface holding a nil pointer.
func isNil(c any) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// invalid is a collector's construction error, nil when it has none: a
// collector that has one describes only it, so that Register (MustRegister
// panics) refuses the collector with the error, and collects only it.
type invalid struct{ err error }

// describe reports whether the collector is valid, else sends its error.
func (v invalid) describe(ch chan<- *prom.Desc) bool {
	if v.err != nil {
		ch <- prom.NewInvalidDesc(v.err)
		return false
	}
	return true
}

// collect reports whether the collector is valid, else sends its error.
func (v invalid) collect(ch chan<- prom.Metric) bool {
	if v.err != nil {
		ch <- prom.NewInvalidMetric(prom.NewInvalidDesc(v.err), v.err)
		return false
	}
	return true
}
