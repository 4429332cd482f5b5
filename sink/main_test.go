package sink

import (
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"

	"go.uber.org/goleak"
)

// The sinks start no goroutines; this keeps it so, and checks that the
// tests' own servers stop.
func TestMain(m *testing.M) {
	// A fixed boot, so that the event ids of the golden lines and the
	// docs' examples do not depend on the machine.
	readBootID = func() (event.BootID, error) { return testBoot, nil }
	getpid = func() int { return 4242 }
	runStart = func() time.Time { return time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC) }
	goleak.VerifyTestMain(m)
}

var testBoot, _ = event.ParseBootID("5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90")
