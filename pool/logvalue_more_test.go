package pool

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// A password in the URL's query (?password=..., as other clients accept
// it; go-redis refuses the option, but a Config is logged before New
// checks it) is not logged: Go's URL.Redacted hides only the user info.
func TestConfigLogValueRedactsQuerySecrets(t *testing.T) {
	for _, u := range []string{
		"redis://h:6379/0?password=q-secret-1",
		"rediss://u@h:6379?dial_timeout=3s&sentinel_password=q-secret-1&client_name=api",
		"redis://h:6379?Password=q-secret-1",
		"redis://h:6379?auth=q-secret-1",
		"redis://h:6379?token=q-secret-1",
	} {
		out := logged(Config{URL: u})
		require.NotContains(t, out, "q-secret-1", "URL %s", u)
		require.Contains(t, out, "h:6379", "URL %s", u)
	}
	out := logged(Config{URL: "redis://h:6379/0?dial_timeout=3s&client_name=api"})
	require.Contains(t, out, "dial_timeout=3s", "an option go-redis knows is shown")
	require.Contains(t, out, "client_name=api")
}

// A Config printed with fmt (log.Printf("%+v", cfg), a panic's value, an
// error's %v) hides its secrets as slog does: it printed every field,
// passwords included.
func TestConfigFormatRedactsSecrets(t *testing.T) {
	cfg := Config{URL: "redis://u:url-secret@h:6379", Password: "pw-secret", SentinelPassword: "spw-secret",
		Addrs: []string{"u:addr-secret@h2:6379"}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{cfg, &cfg} {
			out := fmt.Sprintf(verb, v)
			for _, s := range []string{"url-secret", "pw-secret", "spw-secret", "addr-secret"} {
				require.NotContains(t, out, s, "%s of a %T: %s", verb, v, out)
			}
			require.Contains(t, out, "h:6379", "%s of a %T", verb, v)
		}
	}
}

// A URL put in Addrs by mistake with its password in the query shows the
// address, not the password.
func TestConfigLogValueRedactsAddrQuery(t *testing.T) {
	out := logged(Config{Addrs: []string{"redis://h1:6379/0?password=addrq-secret", "h2:6379"}})
	require.NotContains(t, out, "addrq-secret")
	require.Contains(t, out, "h1:6379")
	require.Contains(t, out, "h2:6379")
}
