package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// RFC 9110 10.2.3: Retry-After is an HTTP-date or a non-negative integer of
// seconds; anything else is as good as none to a client.
func TestValidRetryAfter(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "0": true, "1": true, "3600": true, "-1": false, "1.5": false, " 2": false, "2s": false,
		"99999999999999999999": false, "Wed, 21 Oct 2015 07:28:00 GMT": true, "tomorrow": false,
	} {
		assert.Equal(t, want, validRetryAfter(v), "%q", v)
	}
}
