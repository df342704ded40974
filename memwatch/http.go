package memwatch

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Report is the JSON document Handler serves.
type Report struct {
	Latest Sample  `json:"latest"`
	Alerts []Alert `json:"alerts"` // raised and not cleared; never null
	// Trend is the live-heap growth estimate, absent until the history holds
	// a full growth window.
	Trend *Trend `json:"trend,omitempty"`
	// LongTrend is the estimate over the history since the growth alert last
	// cleared, absent while that is no longer than the window.
	LongTrend *Trend `json:"long_trend,omitempty"`
	Stats     Stats  `json:"stats"`
	// History is every sample kept, oldest first, only with ?history=1.
	History []Sample `json:"history,omitempty"`
}

// Handler returns an http.Handler that serves the latest sample, the active
// alerts, the growth trend and the counters as JSON (a Report), for
// dashboards; with the query parameter history=1 (or true) it adds the
// history. It answers GET and HEAD only.
//
// It does not take samples on request: a dashboard polling it cannot change
// the sampling rate or the history. The one exception is a request that
// comes before the first sample, which takes it (with Tick) so the answer is
// never empty.
func (w *Watcher) Handler() http.Handler {
	return http.HandlerFunc(w.serveHTTP)
}

func (w *Watcher) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rw.Header().Set("Allow", "GET, HEAD")
		http.Error(rw, "memwatch: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	withHistory := false
	if v := r.URL.Query().Get("history"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(rw, "memwatch: history must be a boolean, got "+strconv.Quote(v), http.StatusBadRequest)
			return
		}
		withHistory = b
	}

	rep := w.report(withHistory)
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		return
	}
	enc := json.NewEncoder(rw)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep) // an error here is the client going away
}

// report gathers a Report under one lock, so its parts agree.
func (w *Watcher) report(withHistory bool) Report {
	w.mu.Lock()
	empty := w.history.Len() == 0
	w.mu.Unlock()
	if empty {
		w.Tick()
	}

	w.mu.Lock()
	rep := Report{Alerts: w.alerts.active(make([]Alert, 0, numKinds)), Stats: w.statsLocked()}
	rep.Latest, _ = w.history.Last()
	if w.alerts.haveTrend {
		tr := w.alerts.trend
		rep.Trend = &tr
	}
	if w.alerts.haveLong {
		tr := w.alerts.long
		rep.LongTrend = &tr
	}
	if withHistory {
		rep.History = w.history.Slice()
	}
	w.mu.Unlock()
	return rep
}
