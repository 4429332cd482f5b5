package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeNotifier records the life-cycle calls, in order.
type fakeNotifier struct {
	mu    sync.Mutex
	calls []string
}

func (n *fakeNotifier) add(c string) { n.mu.Lock(); n.calls = append(n.calls, c); n.mu.Unlock() }
func (n *fakeNotifier) Ready()       { n.add("ready") }
func (n *fakeNotifier) Reloading()   { n.add("reloading") }
func (n *fakeNotifier) Stopping()    { n.add("stopping") }
func (n *fakeNotifier) Watchdog()    { n.add("watchdog") }

func (n *fakeNotifier) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return fmt.Sprint(n.calls)
}

// count is how many times c was called.
func (n *fakeNotifier) count(c string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, x := range n.calls {
		if x == c {
			k++
		}
	}
	return k
}

// waitFor polls cond (real time: the loop runs on its own goroutines)
// for up to a minute, a deadline a busy machine meets.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunTicksOnClock: the polls and the watchdog tick on the loop's
// clock, so moving the clock drives them.
func TestRunTicksOnClock(t *testing.T) {
	cfg := testConfig(t, "interval: 1s\n")
	n := &fakeNotifier{}
	opts := Options{Notify: n, WatchdogPeriod: 10 * time.Second}
	h := newFakeLoop(t, cfg, opts, hostNS())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.d.run(ctx, opts) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	waitFor(t, "ready", func() bool { return n.count("ready") == 1 })
	host := h.kernel[hostNS().ID]
	for i := 1; i <= 3; i++ {
		before := host.dumpCount()
		h.clock.Advance(time.Second)
		waitFor(t, "a poll after the clock moved by the interval", func() bool { return host.dumpCount() == before+1 })
	}
	if n.count("watchdog") != 0 {
		t.Fatalf("watchdog pinged after 3 s of a 10 s period: %v", n)
	}
	h.clock.Advance(7 * time.Second)
	waitFor(t, "a watchdog ping at 10 s", func() bool { return n.count("watchdog") == 1 })
}
