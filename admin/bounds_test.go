package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// pageWork serves path once on h and returns the commands the server ran
// for it (INFO commandstats, calls inside scripts included, INFO excluded).
func pageWork(t testing.TB, srv *redistest.Redis, h http.Handler, path string) int64 {
	t.Helper()
	ctx := context.Background()
	s0, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	start := time.Now()
	r := get(t, h, path)
	t.Logf("%s: %v", path, time.Since(start))
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	s1, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	return redistest.TotalCalls(s1, "info", "ping") - redistest.TotalCalls(s0, "info", "ping")
}

// The Redis work of one API page depends on its limit, not on the size of
// the queue: a page of 100 dead letters or delayed jobs (also from the
// middle, so the cursor is used) costs about the same with 200 of each as
// with 100,000 of each (BOUNDED_ADMIN_DEAD changes the dead letters' count),
// on a real server.
func TestDeadPageWorkIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a real server")
	}
	large, delayed := 100_000, 100_000
	if v := os.Getenv("BOUNDED_ADMIN_DEAD"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		large = n
	}
	work := map[int]map[string]int64{}
	for _, n := range []int{200, large} {
		nDelayed := 200
		if n == large {
			nDelayed = delayed
		}
		srv := redistest.Server(t)
		p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
		q, err := queue.New(p, "big", queue.Config{DeadLetterMax: 200_000})
		require.NoError(t, err)
		pays := make([][]byte, n)
		for i := range pays {
			pays[i] = []byte(fmt.Sprint("job ", i))
		}
		kill(t, p, q, pays)
		later := make([][]byte, nDelayed)
		for i := range later {
			later[i] = []byte(fmt.Sprint("later ", i))
		}
		for start := 0; start < nDelayed; start += 10_000 {
			_, err := q.EnqueueBatch(context.Background(), later[start:min(nDelayed, start+10_000)], queue.Delay(time.Hour+time.Duration(start)*time.Millisecond))
			require.NoError(t, err)
		}
		h := mustHandler(t, Config{Inspector: mustInspector(t, p)})
		next := get(t, h, "/api/jobs?queue=big&state=dead&limit=100").body["next"].(string)
		nextDelayed := get(t, h, "/api/jobs?queue=big&state=delayed&limit=100").body["next"].(string)
		w := map[string]int64{
			"dead first page":    pageWork(t, srv, h, "/api/jobs?queue=big&state=dead&limit=100"),
			"dead next page":     pageWork(t, srv, h, "/api/jobs?queue=big&state=dead&limit=100&cursor="+url.QueryEscape(next)),
			"delayed first page": pageWork(t, srv, h, "/api/jobs?queue=big&state=delayed&limit=100"),
			"delayed next page":  pageWork(t, srv, h, "/api/jobs?queue=big&state=delayed&limit=100&cursor="+url.QueryEscape(nextDelayed)),
			"queues":             pageWork(t, srv, h, "/api/queues?limit=100"),
			"session":            pageWork(t, srv, h, "/api/session"),
		}
		r := get(t, h, "/api/jobs?queue=big&state=dead&limit=100&cursor="+url.QueryEscape(next))
		require.Len(t, jobsOf(r), 100)
		work[n] = w
		t.Logf("%d dead letters, %d delayed: server commands per page %v", n, nDelayed, w)
	}
	for page, ref := range work[200] {
		got := work[large][page]
		// The dead page's cursor search is O(log² n): a few more ZCOUNTs
		// and ZRANGEs, never a scan.
		require.LessOrEqual(t, got, ref+40, "%s: %d commands with %d dead letters, %d with 200", page, got, large, ref)
	}
	require.Zero(t, work[large]["session"])
}
