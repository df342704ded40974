package cache

import (
	"errors"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// Only a server that cannot or will not track turns the cache to Pub/Sub
// alone; a passing error (BUSY, LOADING, OOM, a cut connection) fails the
// connection's set-up so that the subscriber connects again.
func TestTrackingRefusedOnlyForRefusals(t *testing.T) {
	for _, c := range []struct {
		err     error
		refused bool
	}{
		{replyErr("ERR unknown command 'HELLO', with args beginning with: "), true},
		{replyErr("ERR unknown subcommand 'TRACKING'. Try CLIENT HELP."), true},
		{replyErr("NOPERM this user has no permissions to run the 'client|tracking' command"), true},
		{fmt.Errorf("wrapped: %w", errNoHelloID), true},
		{replyErr("ERR wrong number of arguments for 'hello' command"), true}, // miniredis
		{replyErr("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT."), false},
		{replyErr("LOADING Redis is loading the dataset in memory"), false},
		{replyErr("OOM command not allowed when used memory > 'maxmemory'."), false},
		{errors.New("read tcp: i/o timeout"), false},
	} {
		require.Equal(t, c.refused, trackingRefused(c.err), "%v", c.err)
	}
}

// replyErr is an error reply from Redis, as go-redis's redis.Error.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

var _ redis.Error = replyErr("")
