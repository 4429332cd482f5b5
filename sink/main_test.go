package sink

import (
	"testing"

	"go.uber.org/goleak"
)

// The sinks start no goroutines; this keeps it so, and checks that the
// tests' own servers stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
