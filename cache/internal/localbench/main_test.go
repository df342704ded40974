package localbench

import (
	"testing"

	"go.uber.org/goleak"
)

// Otter's clean-up goroutine outlives its cache (TestOtterStartsGoroutines
// shows it on purpose: it is one of the reasons package cache does not use
// otter). Every other goroutine must be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/maypok86/otter/v2.periodicCleanUp[...]"))
}
