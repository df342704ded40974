package hashslot

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCRC16(t *testing.T) {
	// The check value of CRC-16/XMODEM, and the example of the Redis
	// Cluster specification.
	require.Equal(t, uint16(0x31C3), CRC16("123456789"))
	require.Equal(t, 12182, Of("foo"))
	require.Equal(t, Of("{user1000}.following"), Of("{user1000}.followers"))
	require.Equal(t, Of("user1000"), Of("{user1000}.following"))
}

func TestOfHashTags(t *testing.T) {
	require.Equal(t, Of("bar"), Of("{bar}:x"), "the tag alone is hashed")
	require.Equal(t, Of("bar"), Of("foo{bar}{zap}"), "only the first tag counts")
	require.Equal(t, int(CRC16("foo{}{bar}")%Count), Of("foo{}{bar}"), "an empty tag hashes the whole key")
	require.Equal(t, int(CRC16("{bar")%Count), Of("{bar"), "no closing brace: the whole key")
	require.Equal(t, Of("{bq:a}:ready"), Of("{bq:a}:bell"))
}
