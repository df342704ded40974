package queue

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	e := envelope{
		id: "01J-abc", attempt: 2, maxAttempts: 5, deliveries: 1,
		enqueuedAt: time.UnixMilli(1764000000123), timeout: 1500 * time.Millisecond,
		unique: true, payload: []byte("hello|world\x00\xff"),
	}
	b := e.encode()
	require.Equal(t, "bq1|01J-abc|2|5|1|1764000000123|1500|u|hello|world\x00\xff", string(b))
	got, err := decodeEnvelope(b)
	require.NoError(t, err)
	require.Equal(t, e.id, got.id)
	require.Equal(t, e.attempt, got.attempt)
	require.Equal(t, e.maxAttempts, got.maxAttempts)
	require.Equal(t, e.deliveries, got.deliveries)
	require.True(t, e.enqueuedAt.Equal(got.enqueuedAt))
	require.Equal(t, e.timeout, got.timeout)
	require.True(t, got.unique)
	require.Equal(t, e.payload, got.payload)
}

func TestDecodeRejectsMalformed(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "unknown format"},
		{"hello", "unknown format"},
		{wakeMarker, "unknown format"},
		{"bq1|id|0|1|0|5", "header cut short after 4 of 7 fields"},
		{"bq1||0|1|0|5|0||x", "job ID is empty"},
		{"bq1|a b|0|1|0|5|0||x", "use printable ASCII"},
		{"bq1|id|x|1|0|5|0||x", `field attempt is "x"`},
		{"bq1|id|-1|1|0|5|0||x", "field attempt"},
		{"bq1|id|0|0|0|5|0||x", "out of range"},
		{"bq1|id|0|1|0|5|0|z|x", `unknown flags "z"`},
		{"bq1|id|0|1|0|5|99999999999999999|u|x", "timeout"},
	} {
		_, err := decodeEnvelope([]byte(c.in))
		require.ErrorIs(t, err, errMalformed, c.in)
		require.ErrorContains(t, err, c.want, c.in)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("bq1|id|0|1|0|1764000000123|0||payload"))
	f.Add([]byte("bq1|id|3|5|2|0|100|u|"))
	f.Add([]byte(wakeMarker))
	f.Add([]byte("bq1|||||||"))
	f.Add([]byte("bq1|id|0|1|0|-5|0|ur|ref123"))
	f.Add([]byte("bq1|id|0|1|0|5|0|h|16|1:a0:5:tp-id3:xyzpayload"))
	f.Add([]byte("bq1|id|0|1|0|5|0|urh|5|1:a0:ref123"))
	f.Add([]byte("bq1|id|0|1|0|5|0|utp3|1|tpayload"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEnvelope(data)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		if again := e.encode(); !bytes.Equal(again, data) {
			// Numbers may be written with leading zeros or "+" by a foreign
			// producer; those decode but normalise. Anything else is a bug.
			e2, err := decodeEnvelope(again)
			require.NoError(t, err)
			require.Equal(t, e.id, e2.id)
			require.Equal(t, e.payload, e2.payload)
			require.Equal(t, e.attempt, e2.attempt)
			require.Equal(t, e.level, e2.level)
		}
	})
}
