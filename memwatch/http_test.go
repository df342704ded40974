package memwatch

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func get(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func TestHandlerServesLatestAlertsAndHistory(t *testing.T) {
	f := newFake()
	w := newWatcher(t, f.config(Config{Goroutines: 100, History: 4, GrowthWindow: 3}))
	h := w.Handler()

	// Before the first sample the handler takes one, so it is never empty.
	f.s = Sample{HeapLive: 1 << 20, Goroutines: 7}
	rec := get(t, h, http.MethodGet, "/")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	var rep Report
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep))
	require.Equal(t, uint64(7), rep.Latest.Goroutines)
	require.Equal(t, f.clk.Now(), rep.Latest.Time.UTC())
	require.NotNil(t, rep.Alerts)
	require.Empty(t, rep.Alerts)
	require.Nil(t, rep.Trend)
	require.Nil(t, rep.History)
	require.Contains(t, rec.Body.String(), `"alerts": []`, "an empty list, not null")

	// Later requests do not sample: the schedule owns the history.
	get(t, h, http.MethodGet, "/")
	require.Len(t, w.History(), 1)

	for i := range 5 {
		f.clk.Advance(5 * time.Second)
		f.s.Goroutines = uint64(100 + i)
		w.Tick()
	}
	rec = get(t, h, http.MethodGet, "/?history=1")
	require.Equal(t, http.StatusOK, rec.Code)
	rep = Report{}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep))
	require.Len(t, rep.History, 4)
	require.Equal(t, uint64(104), rep.Latest.Goroutines)
	require.Equal(t, rep.History[3], rep.Latest)
	require.Len(t, rep.Alerts, 1)
	require.Equal(t, AlertGoroutines, rep.Alerts[0].Kind)
	require.NotNil(t, rep.Trend)
	require.Equal(t, 3, rep.Trend.Samples)
	require.Equal(t, uint64(6), rep.Stats.Samples)
	require.Contains(t, rec.Body.String(), `"heap_live_bytes": 1048576`)

	rec = get(t, h, http.MethodGet, "/?history=false")
	require.NotContains(t, rec.Body.String(), `"history"`)
}

func TestHandlerRejectsBadRequests(t *testing.T) {
	w := newWatcher(t, newFake().config(Config{}))
	h := w.Handler()
	rec := get(t, h, http.MethodPost, "/")
	require.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	require.Equal(t, "GET, HEAD", rec.Header().Get("Allow"))

	rec = get(t, h, http.MethodGet, "/?history=lots")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Contains(t, rec.Body.String(), `history must be a boolean, got "lots"`)

	rec = get(t, h, http.MethodHead, "/")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Empty(t, rec.Body.String())
}
