package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BlackHoleAfter forwards commands until one names its word; from then on
// the connection answers nothing, while a new connection works again.
func TestBlackHoleAfter(t *testing.T) {
	addr := BlackHoleAfter(t, Mini(t).Addr(), "SUBSCRIBE")
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	r := bufio.NewReader(c)
	send := func(args ...string) {
		_, err := c.Write(resp(args...))
		require.NoError(t, err)
	}

	send("PING")
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+PONG\r\n", line, "forwarded")

	send("subscribe", "ch")
	send("PING")
	// Silence cannot be awaited: a short deadline shows none came yet, and a
	// proxy that answered would most likely have done so within it.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, err = r.ReadString('\n')
	require.True(t, errors.Is(err, os.ErrDeadlineExceeded), "no answer after SUBSCRIBE, got %v", err)

	c2, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer func() { _ = c2.Close() }()
	_, err = c2.Write(resp("PING"))
	require.NoError(t, err)
	require.NoError(t, c2.SetReadDeadline(time.Now().Add(10*time.Second)))
	line, err = bufio.NewReader(c2).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+PONG\r\n", line, "another connection is forwarded")
}

// resp is a command as clients send it.
func resp(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

// A connection of BlackHoleAfter that has not met its word ends when its
// upstream does, as a direct connection would: the client reads EOF, not
// silence (a client without a read deadline, a subscriber, would wait for
// ever).
func TestBlackHoleAfterUpstreamCloses(t *testing.T) {
	m := Mini(t)
	addr := BlackHoleAfter(t, m.Addr(), "SUBSCRIBE")
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	r := bufio.NewReader(c)
	_, err = c.Write(resp("PING"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+PONG\r\n", line)

	m.Close()
	_, err = r.ReadString('\n')
	require.ErrorIs(t, err, io.EOF, "the upstream's close passed on")
}
