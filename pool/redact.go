package pool

import (
	"errors"
	"net/url"
	"strings"
)

// urlError is the error for a Config.URL that does not parse, without the
// URL's password. net/url quotes the whole input in its error, and both it
// and go-redis quote the part they reject, which in a malformed URL can be
// the password itself (redis://u:p/w@host reads "p" as a port). So when
// the URL has user info, the quoted parts are dropped.
func urlError(raw string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the quoted input
	}
	msg := err.Error()
	if strings.Contains(raw, "@") {
		msg = dropQuoted(msg, "(value not shown: the URL holds credentials)")
	}
	return errors.New("Config.URL: " + msg)
}

// dropQuoted replaces each double-quoted part of s (Go's %q, escapes
// included) with with; an unterminated quote runs to the end.
func dropQuoted(s, with string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(with)
		j := i + 1
		for j < len(s) && s[j] != '"' {
			if s[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(s) {
			return b.String()
		}
		s = s[j+1:]
	}
}
