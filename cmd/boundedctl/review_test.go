package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A command's -h prints its flags with their defaults; the --redis flag's
// default is the URL given before the command or in $BOUNDED_REDIS_URL, and
// it must not print the password.
func TestHelpHidesPassword(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	url := "redis://user:" + secret + "@127.0.0.1:1/0"
	for _, c := range commands() {
		for _, r := range []result{
			ctl(t, map[string]string{EnvRedisURL: url}, c.name, "-h"),
			ctl(t, nil, "--redis", url, c.name, "-h"),
			ctl(t, map[string]string{EnvRedisURL: url}, "help"),
		} {
			require.Equal(t, exitOK, r.code, "boundedctl %s -h: %s", c.name, r.stderr)
			require.NotEmpty(t, r.stdout)
			require.NotContains(t, r.stdout+r.stderr, secret, "boundedctl %s -h", c.name)
		}
	}
}
