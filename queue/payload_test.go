package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// Job.Payload is the run's own: a handler that changes it in place (decrypts
// or decompresses into it) does not change what a retry runs.
func TestRetryRunsThePayloadAsEnqueued(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			q := mustQueue(t, p, "mutate", Config{})
			seen := make(chan string, 8)
			g := group(t)
			startWorker(t, g, q, func(_ context.Context, j *Job) error {
				seen <- strconv.Itoa(j.Attempt) + ":" + string(j.Payload)
				if j.Attempt == 1 {
					for i := range j.Payload {
						j.Payload[i] = 'X'
					}
					return errors.New("once more")
				}
				return nil
			}, WorkerConfig{Concurrency: 1, RetryBase: time.Millisecond, RetryMax: time.Millisecond})
			_, err := q.Enqueue(context.Background(), []byte("original"), Type("t.mutate"))
			require.NoError(t, err)
			require.Equal(t, "1:original", recv(t, seen, 10*time.Second, "the first run"))
			require.Equal(t, "2:original", recv(t, seen, 10*time.Second, "the retry"), "the retry runs the payload as enqueued")
		})
	}
}

// kept is what a handler kept of its job after returning.
type kept struct {
	id, typ string
	payload []byte
	headers map[string]string
}

// Job.Payload, Headers and Type may be kept after the handler returned:
// no buffer is reused. Handlers hand them to this goroutine, which reads
// each while the worker goes on running jobs (under -race a reused buffer
// is a reported race, and otherwise changed bytes), and again at the end.
// Small payloads ride in the element, large ones are kept apart, some come
// in batches, some are retried.
func TestPayloadsAreSafeToKeep(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPayloadsSafeToKeep(t, np) })
	}
}

func testPayloadsSafeToKeep(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "keep", Config{})
	const jobs = 400
	// payloadOf is job n's payload: its number, then a filler of a byte
	// that depends on n, over inlineMax for every seventh.
	payloadOf := func(n int) []byte {
		size := 64 + n%97
		if n%7 == 0 {
			size = inlineMax + 1 + n
		}
		return append([]byte(fmt.Sprintf("%04d:", n)), bytes.Repeat([]byte{byte('a' + n%26)}, size)...)
	}
	keptCh := make(chan kept, 2*jobs)
	g := group(t)
	startWorker(t, g, q, func(_ context.Context, j *Job) error {
		keptCh <- kept{j.ID, j.Type, j.Payload, j.Headers}
		if n, _ := strconv.Atoi(string(j.Payload[:4])); n%11 == 0 && j.Attempt == 1 {
			return errors.New("retry me")
		}
		return nil
	}, WorkerConfig{Concurrency: 8, RetryBase: time.Millisecond, RetryMax: time.Millisecond})

	check := func(k kept) {
		t.Helper()
		n, err := strconv.Atoi(string(k.payload[:4]))
		require.NoError(t, err, "job %s: %q", k.id, preview(k.payload))
		require.Equal(t, payloadOf(n), k.payload, "job %s: its payload changed after the run", k.id)
		require.Equal(t, fmt.Sprintf("t.%d", n%3), k.typ, k.id)
		require.Equal(t, map[string]string{"n": strconv.Itoa(n)}, k.headers, k.id)
	}
	var all []kept
	expected := 0
	for n := 0; n < jobs; n++ {
		opts := []EnqueueOption{Type(fmt.Sprintf("t.%d", n%3)), Header("n", strconv.Itoa(n))}
		if n%50 == 0 { // a batch of one: EnqueueBatch's path
			_, err := q.EnqueueBatch(ctx, [][]byte{payloadOf(n)}, opts...)
			require.NoError(t, err)
		} else {
			_, err := q.Enqueue(ctx, payloadOf(n), opts...)
			require.NoError(t, err)
		}
		expected++
		if n%11 == 0 {
			expected++ // its retry
		}
		// Read what the handlers kept so far while the worker runs on.
		for len(keptCh) > 0 {
			k := <-keptCh
			check(k)
			all = append(all, k)
		}
	}
	for len(all) < expected {
		k := recv(t, keptCh, 20*time.Second, fmt.Sprintf("run %d of %d", len(all)+1, expected))
		check(k)
		all = append(all, k)
	}
	for _, k := range all {
		check(k)
	}
}
