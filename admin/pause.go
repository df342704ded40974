package admin

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/bounded-go/bounded/internal/check"
)

// pause and resume answer api/pause and api/resume: {"queue"} of a queue
// the namespace's registry lists (a typo must not pause a queue nobody
// uses, nor register one), then Inspector.Pause or Resume, which act for
// the whole fleet. Both are idempotent.
func (h *handler) pause(w http.ResponseWriter, r *http.Request)  { h.setPaused(w, r, true) }
func (h *handler) resume(w http.ResponseWriter, r *http.Request) { h.setPaused(w, r, false) }

func (h *handler) setPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	b, ok := decode(w, r)
	if !ok {
		return
	}
	what := "resume"
	if paused {
		what = "pause"
	}
	if err := check.Name("queue name", b.Queue); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", what+": "+err.Error())
		return
	}
	known, err := h.listed(r.Context(), b.Queue)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !known {
		writeError(w, http.StatusNotFound, "not_found", what+": unknown queue "+strconv.Quote(b.Queue)+" in namespace "+
			strconv.Quote(h.cfg.Inspector.Namespace())+" (never used, or not seen for 30 days)")
		return
	}
	f := h.cfg.Inspector.Resume
	if paused {
		f = h.cfg.Inspector.Pause
	}
	if err := f(r.Context(), b.Queue); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"queue": b.Queue, "paused": paused})
}

// listed says whether the namespace's registry lists the queue name (a
// valid name): one page of one queue, not a scan. Inspector.Queues pages
// by name after an exclusive cursor, so the page after the greatest name
// below name (names are at most check.MaxNameBytes bytes and none ends
// with a control character) starts with name when it is listed. The same
// lookup as boundedctl's.
func (h *handler) listed(ctx context.Context, name string) (bool, error) {
	last := name[len(name)-1]
	below := name[:len(name)-1] + string([]byte{last - 1}) + strings.Repeat("\xff", check.MaxNameBytes-len(name))
	page, err := h.cfg.Inspector.Queues(ctx, below, 1)
	if err != nil {
		return false, err
	}
	return len(page.Queues) == 1 && page.Queues[0].Name == name, nil
}
