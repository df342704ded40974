package check

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errInvalid = errors.New("pkg: invalid config")

func TestErrors(t *testing.T) {
	e := New(errInvalid)
	require.NoError(t, e.Err())
	e.Add(nil)
	require.NoError(t, e.Err())

	errCause := errors.New("cause")
	e.Addf("Config.A must be positive, got %d", -1)
	e.Add(errCause)
	e.Addf("Config.B: %w", errCause)
	err := e.Err()
	require.ErrorIs(t, err, errInvalid)
	require.ErrorIs(t, err, errCause)
	require.Equal(t, "pkg: invalid config: Config.A must be positive, got -1\npkg: invalid config: cause\npkg: invalid config: Config.B: cause", err.Error())
}

func TestDefault(t *testing.T) {
	e := New(errInvalid)
	n, d, f := 0, time.Duration(0), 0.0
	Default(e, &n, 7, "Config.N")
	Default(e, &d, time.Second, "Config.D")
	Default(e, &f, 0.5, "Config.F")
	require.NoError(t, e.Err())
	require.Equal(t, 7, n)
	require.Equal(t, time.Second, d)
	require.Equal(t, 0.5, f)

	n, d = 3, -time.Millisecond
	Default(e, &n, 7, "Config.N")
	Default(e, &d, time.Second, "Config.D")
	require.Equal(t, 3, n, "a set value is kept")
	require.Equal(t, -time.Millisecond, d, "a bad value is left for the caller to see")
	require.EqualError(t, e.Err(), "pkg: invalid config: Config.D must not be negative, got -1ms")
}

func TestName(t *testing.T) {
	require.NoError(t, Name("name", "orders-eu.v2_x:y"))
	require.NoError(t, Name("name", strings.Repeat("é", MaxNameBytes/2)))
	for s, want := range map[string]string{
		"":                                  "name must not be empty",
		strings.Repeat("a", MaxNameBytes+1): "is 101 bytes, the limit is 100",
		"a{b":                               "must not contain '{' or '}'",
		"b}":                                "must not contain '{' or '}'",
		"a b":                               "must not contain spaces or control characters",
		"a\tb":                              "must not contain spaces or control characters",
		"a\x7f":                             "must not contain spaces or control characters",
		"\u00a0":                            "must not contain spaces or control characters",
		"a\u0085b":                          "must not contain spaces or control characters",
		"a\u2028":                           "must not contain spaces or control characters",
	} {
		err := Name("name", s)
		if want == "" {
			require.NoError(t, err, "%q", s)
			continue
		}
		require.ErrorContains(t, err, want, "%q", s)
	}
}
