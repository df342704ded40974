package browsertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/queue"
)

// The queue names of examples/chatservice (its chatapi package is internal
// to the examples, so they are spelled here).
const (
	queueChat       = "chat"
	queueEmbeddings = "embeddings"
	queueWebhooks   = "webhooks"
)

// xssPayload must show as text on the page and never run.
const xssPayload = `<script>window.__pwned=1</script>`

// cspViolationsJS records the page's Content-Security-Policy violations.
const cspViolationsJS = `window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber));`

// rowsJS reads the first table of the view (the queues, the jobs) as cell texts.
const rowsJS = `Array.from(document.querySelectorAll("main table:first-of-type tbody tr")).map(r => Array.from(r.cells).map(c => c.textContent))`

// The browser test: examples/chatservice with -admin-mutations on a
// real redis-server, its dashboard in headless chromium. The queue table
// lists the service's queues with their counts; a dead job whose payload is
// a <script> shows it as text and does not run it; requeueing a dead job
// (through the page's button and its confirm dialog) gets it processed by
// the service: it leaves the dead letters and the dead count drops. Pausing
// a queue with its button holds a job enqueued to it while the service
// processes others; resuming gets it processed.
func TestDashboardInChromium(t *testing.T) {
	ctx := browser(t, 3*time.Minute) // first: skips at once without chromium
	dir := artifactsDir(t)
	srv := redistest.Server(t)
	p := mustPool(t, srv.Addr())

	// The dead letters, made before the service starts, on its queues in
	// its namespace (the default), by a worker of this process that fails
	// everything: a webhook the service would process, and the <script>.
	hooks, err := queue.New(p, queueWebhooks, queue.Config{})
	require.NoError(t, err)
	ids := killJobs(t, p, hooks, [][]byte{[]byte(`{"id":"browser-test","status":"done"}`), []byte(xssPayload)})
	goodID, xssID := ids[0], ids[1]
	// Jobs that stay put while the page is looked at: delayed by an hour.
	emb, err := queue.New(p, queueEmbeddings, queue.Config{})
	require.NoError(t, err)
	for i := range 3 {
		_, err := emb.Enqueue(context.Background(), fmt.Appendf(nil, `{"id":"later-%d","text":"hello"}`, i), queue.Delay(time.Hour))
		require.NoError(t, err)
	}

	bin := buildChatservice(t, t.TempDir())
	svc := startService(t, bin, dir, srv.URL(), "-admin-mutations")
	dialogs := acceptDialogs(t, ctx)
	// Everything the page does must work under its Content-Security-Policy:
	// a violation (an inline style or script the page came to rely on) is
	// recorded in every document and fails the test at the end.
	_, err = chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspViolationsJS})
	require.NoError(t, err)
	t.Cleanup(func() {
		if v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.__csp || []`)); err == nil {
			require.Empty(t, v, "Content-Security-Policy violations in the last document")
		}
	})

	// The queue table.
	rows := mustRun(t, ctx, chromedp.Steps(
		chromedp.Navigate(svc.URL+"/admin/"),
		chromedp.WaitVisible(chromedp.CSS(`main table tbody tr`)),
	), chromedp.Evaluate[[][]string](rowsJS))
	byName := map[string][]string{}
	for _, r := range rows {
		byName[r[0]] = r
	}
	for _, name := range []string{queueChat, queueEmbeddings, queueWebhooks} {
		require.Contains(t, byName, name, "queue table rows %q", rows)
	}
	// Columns: queue, ready, delayed, in flight, dead, consumers, ...
	require.Equal(t, "3", byName[queueEmbeddings][2], "embeddings' delayed count: %q", byName[queueEmbeddings])
	require.Equal(t, "2", byName[queueWebhooks][4], "webhooks' dead count: %q", byName[queueWebhooks])
	require.Equal(t, "1", byName[queueWebhooks][5], "webhooks' consumers (the service): %q", byName[queueWebhooks])
	screenshot(t, ctx, dir, "1-queues")
	require.Empty(t, evalJS[[]string](t, ctx, `window.__csp`), "Content-Security-Policy violations on the queue page")

	// The dead letters, then the <script> job's page, reached by clicking.
	deadPayloads := mustRun(t, ctx, chromedp.Steps(
		chromedp.Click(chromedp.Search(`//tr[td[1]/a[text()="webhooks"]]/td[5]/a`)),
		chromedp.WaitVisible(chromedp.Search(`//main//a[text()="`+xssID+`"]`)),
	), chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("main tbody pre")).map(p => p.textContent)`))
	require.Contains(t, deadPayloads, xssPayload, "the dead letters' table shows the payload as text")
	screenshot(t, ctx, dir, "2-dead-letters")

	payload := mustRun(t, ctx, chromedp.Steps(
		chromedp.Click(chromedp.Search(`//main//a[text()="`+xssID+`"]`)),
		chromedp.WaitVisible(chromedp.Search(`//main/h2/code[text()="`+xssID+`"]`)),
	), chromedp.Evaluate[string](`document.evaluate('//dt[text()="payload"]/following-sibling::dd[1]/pre', document, null, 9, null).singleNodeValue.textContent`))
	require.Equal(t, xssPayload, payload, "the payload, as text")
	require.Equal(t, "undefined", evalJS[string](t, ctx, `typeof window.__pwned`), "the <script> payload ran")
	require.Zero(t, evalJS[int](t, ctx, `document.querySelectorAll("main script").length`), "a <script> element was made from the payload")
	screenshot(t, ctx, dir, "3-script-payload-as-text")

	// Requeue the good webhook from its page; the service processes it.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(svc.URL+"/admin/#/job/webhooks/"+goodID),
		chromedp.WaitVisible(chromedp.Search(`//main/h2/code[text()="`+goodID+`"]`)),
	))
	screenshot(t, ctx, dir, "4-dead-job")
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.Search(`//main//button[text()="requeue"]`))))
	// The page says what it did and renders the job again: not dead any
	// more (ready, running, done), or gone already ("could not be loaded").
	waitPage(t, ctx, "the requeue's notice",
		`document.getElementById("notice").textContent === "Requeued 1 job (`+goodID+`)."`)
	waitPage(t, ctx, "the job page after the requeue",
		`!document.evaluate('//main//button[text()="requeue"]', document, null, 9, null).singleNodeValue`)
	got := dialogs()
	require.Len(t, got, 1, "confirm dialogs: %q", got)
	require.Equal(t, "Requeue "+goodID+"?", got[0], "the confirm names the job")
	screenshot(t, ctx, dir, "5-requeued")

	// Processed: gone from the dead letters, the dead count down to 1 (the
	// <script> job), and the job done or expired, never dead again.
	testutil.Eventually(t, 30*time.Second, "the requeued job processed", func() bool {
		info, err := hooks.Get(context.Background(), goodID)
		if errors.Is(err, queue.ErrJobNotFound) {
			return true
		}
		require.NoError(t, err)
		require.NotEqual(t, queue.StateDead, info.State, "the requeued webhook died again")
		return info.State == queue.StateDone
	})
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(svc.URL+"/admin/#/queues?after=requeue")))
	waitPage(t, ctx, "webhooks' dead count at 1",
		`(() => { const r = Array.from(document.querySelectorAll("main table:first-of-type tbody tr")).find(r => r.cells[0].textContent === "webhooks"); return !!r && r.cells[4].textContent === "1"; })()`)
	// This process's workers: the service's webhooks worker counted the run.
	waitPage(t, ctx, "the webhooks worker's row",
		`Array.from(document.querySelectorAll("main h3 + table tbody tr")).some(r => r.cells[0].textContent === "webhooks" && Number(r.cells[2].textContent) >= 1)`)
	screenshot(t, ctx, dir, "6-queues-after-requeue")
	rows = mustRun(t, ctx, chromedp.Steps(
		chromedp.Navigate(svc.URL+"/admin/#/queue/webhooks/dead?after=requeue"),
		chromedp.WaitVisible(chromedp.Search(`//main//a[text()="`+xssID+`"]`)),
	), chromedp.Evaluate[[][]string](rowsJS))
	require.Len(t, rows, 1, "dead letters after the requeue: %q", rows)
	// Pause and resume the embeddings queue from the queue table.
	pauseFromPage(t, ctx, svc.URL, dir, emb, hooks, dialogs)
	// The other views, each drawn once, under the policy too.
	for _, view := range []string{"#/components", "#/consumers", "#/memory"} {
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(svc.URL+"/admin/"+view)))
		waitPage(t, ctx, view+" drawn", `!!document.querySelector("main h2, main table") && !document.getElementById("main").textContent.startsWith("Loading")`)
		require.Empty(t, evalJS[string](t, ctx, `document.getElementById("error").textContent`), "%s shows an error", view)
		require.Empty(t, evalJS[[]string](t, ctx, `window.__csp`), "Content-Security-Policy violations on %s", view)
	}
	require.Equal(t, "undefined", evalJS[string](t, ctx, `typeof window.__pwned`), "the <script> payload ran")
}

// acceptDialogs accepts every JavaScript dialog the tab opens (the page's
// confirm before a mutation) and returns a func that lists their messages.
func acceptDialogs(t testing.TB, ctx context.Context) func() []string {
	t.Helper()
	dctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var msgs []string
	done := make(chan struct{})
	events := chromedp.Events(dctx, page.JavascriptDialogOpening)
	// The page's Click waits while a dialog is open, so the dialog is
	// answered on another goroutine; it ends when dctx does.
	go func() {
		defer close(done)
		for ev, err := range events {
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, ev.Message)
			mu.Unlock()
			if _, err := chromedp.Call(dctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		testutil.Recv(t, done, "the dialog handler's end")
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
}

// mustRun runs steps, then read, and returns read's value.
func mustRun[T any](t testing.TB, ctx context.Context, steps chromedp.Action[chromedp.Void], read chromedp.Action[T]) T {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, steps))
	v, err := chromedp.Run(ctx, read)
	require.NoError(t, err)
	return v
}

func evalJS[T any](t testing.TB, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(t, err, "%s", js)
	return v
}

// waitPage waits until the JavaScript expression cond is true in the page.
func waitPage(t testing.TB, ctx context.Context, what, cond string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for %s: %v; the page reads:\n%s", what, err, strings.TrimSpace(text))
	}
}
