package browsertest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/queue"
)

// workerProcessedJS reads the processed count of the service's worker of a
// queue from the queue page's workers table (-1 while it is not drawn).
func workerProcessedJS(name string) string {
	return fmt.Sprintf(`(() => { const r = Array.from(document.querySelectorAll("main h3 + table tbody tr")).find(r => r.cells[0].textContent === %q); return r ? Number(r.cells[2].textContent) : -1; })()`, name)
}

// queueCellJS reads cell i of a queue's row in the queue table ("" while
// it is not drawn).
func queueCellJS(name string, i int) string {
	return fmt.Sprintf(`(() => { const r = Array.from(document.querySelectorAll("main table:first-of-type tbody tr")).find(r => r.cells[0].textContent === %q); return r ? r.cells[%d].textContent : ""; })()`, name, i)
}

// processed waits until q's job id is done (or its record expired), and
// fails if it died.
func processed(t *testing.T, q *queue.Queue, id string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "job "+id+" of "+q.Name()+" processed", func() bool {
		info, err := q.Get(context.Background(), id)
		if errors.Is(err, queue.ErrJobNotFound) {
			return true
		}
		require.NoError(t, err)
		require.NotEqual(t, queue.StateDead, info.State, "job %s of %s died", id, q.Name())
		return info.State == queue.StateDone
	})
}

// pauseFromPage pauses the embeddings queue with the queue table's button,
// checks that a job enqueued to it is not processed while paused, resumes
// it with the button and sees the job processed.
//
// "Not processed while paused" is observed over a window that ends with
// an event, not a timer: the job is enqueued (its doorbell rung) and
// then a webhook is enqueued; the test waits until the service has
// processed the webhook. The service's one consumer pops every ring on one
// fetch hub, and the embeddings worker is idle (its only jobs are delayed
// by an hour), so without the pause the embeddings ring, rung first, would
// have woken that worker before the webhook's ring existed. Once the
// webhook is done, the embeddings job must still be ready and the
// service's embeddings worker must not have counted a run. (A pause that
// did not hold could at worst let this check pass by a late take; it can
// never fail the test while the pause holds.)
func pauseFromPage(t *testing.T, ctx context.Context, svcURL, dir string, emb, hooks *queue.Queue, dialogs func() []string) {
	bg := context.Background()
	pauseBtn := `//tr[td[1]/a[text()="embeddings"]]//button[text()="pause"]`
	resumeBtn := `//tr[td[1]/a[text()="embeddings"]]//button[text()="resume"]`
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(svcURL+"/admin/#/queues?step=pause"),
		chromedp.WaitVisible(chromedp.Search(pauseBtn)),
	))
	waitPage(t, ctx, "the workers' table", workerProcessedJS(queueEmbeddings)+` >= 0 && `+workerProcessedJS(queueWebhooks)+` >= 0`)
	embBefore := evalJS[int](t, ctx, workerProcessedJS(queueEmbeddings))
	hooksBefore := evalJS[int](t, ctx, workerProcessedJS(queueWebhooks))
	require.Equal(t, "active", evalJS[string](t, ctx, queueCellJS(queueEmbeddings, 7)), "embeddings' state column")

	asked := len(dialogs())
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.Search(pauseBtn))))
	waitPage(t, ctx, "the pause's notice", `document.getElementById("notice").textContent === "Paused embeddings."`)
	waitPage(t, ctx, "embeddings shown paused, with a resume button",
		queueCellJS(queueEmbeddings, 7)+` === "paused" && !!document.evaluate('`+resumeBtn+`', document, null, 9, null).singleNodeValue`)
	got := dialogs()
	require.Len(t, got, asked+1, "confirm dialogs: %q", got)
	require.Contains(t, got[asked], "Pause embeddings?", "the confirm names the queue")
	paused, err := emb.Paused(bg)
	require.NoError(t, err)
	require.True(t, paused, "the page's pause did not pause the queue in Redis")
	screenshot(t, ctx, dir, "7-paused")

	held, err := emb.Enqueue(bg, []byte(`{"id":"while-paused","text":"hello"}`))
	require.NoError(t, err)
	after, err := hooks.Enqueue(bg, []byte(`{"id":"after-the-paused-one","status":"done"}`))
	require.NoError(t, err)
	processed(t, hooks, after)
	info, err := emb.Get(bg, held)
	require.False(t, errors.Is(err, queue.ErrJobNotFound), "the paused queue's job was processed (its record is gone): %v", err)
	require.NoError(t, err)
	require.Equal(t, queue.StateReady, info.State, "the paused queue's job left the ready list")
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(svcURL+"/admin/#/queues?step=paused")))
	waitPage(t, ctx, "the webhook counted by the service's worker", fmt.Sprintf("%s > %d", workerProcessedJS(queueWebhooks), hooksBefore))
	require.Equal(t, embBefore, evalJS[int](t, ctx, workerProcessedJS(queueEmbeddings)), "the paused queue's worker ran a job")
	require.Equal(t, "1", evalJS[string](t, ctx, queueCellJS(queueEmbeddings, 1)), "embeddings' ready count while paused")
	require.Equal(t, "paused", evalJS[string](t, ctx, queueCellJS(queueEmbeddings, 7)))

	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.Search(resumeBtn))))
	waitPage(t, ctx, "the resume's notice", `document.getElementById("notice").textContent === "Resumed embeddings."`)
	got = dialogs()
	require.Len(t, got, asked+2, "confirm dialogs: %q", got)
	require.Contains(t, got[asked+1], "Resume embeddings?")
	processed(t, emb, held)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(svcURL+"/admin/#/queues?step=resumed")))
	waitPage(t, ctx, "the held job counted by the service's embeddings worker", fmt.Sprintf("%s === %d", workerProcessedJS(queueEmbeddings), embBefore+1))
	waitPage(t, ctx, "embeddings active again", queueCellJS(queueEmbeddings, 7)+` === "active"`)
	screenshot(t, ctx, dir, "8-resumed")
}
