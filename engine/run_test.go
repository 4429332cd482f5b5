package engine

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
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

// probeDumps is how many dumps opening the host's namespace makes (one
// per request, to learn which the kernel serves), before any poll.
func probeDumps(t *testing.T, yaml string) int {
	t.Helper()
	h := newHarness(t, testConfig(t, yaml), hostNS())
	if err := h.d.rescan(); err != nil {
		t.Fatal(err)
	}
	return h.kernel[hostNS().ID].dumpCount()
}

// TestStopDuringFirstRound: SIGTERM while the first poll round is still
// dumping (the first round of many namespaces can outlast systemd's stop
// timeout) takes the clean path at once: the loop says it is stopping
// while the dump is under way, drops the rest of the round, and when the
// dump returns saves the table and flushes the sinks. Never ready.
func TestStopDuringFirstRound(t *testing.T) {
	yaml := "interval: 1s\nstate_file: " + filepath.Join(t.TempDir(), "state") + "\n"
	probes := probeDumps(t, yaml)
	cfg := testConfig(t, yaml)
	n := &fakeNotifier{}
	opts := Options{Notify: n}
	h := newFakeLoop(t, cfg, opts, hostNS(), otherNS(0))
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // a failed test leaves no dump held
	host := h.kernel[hostNS().ID]
	host.onDump = func(k int) {
		if k == probes+1 { // the first round's dump of the host
			close(entered)
			<-release
		}
	}
	other := h.kernel[otherNS(0).ID]

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- h.d.run(ctx, opts) }()
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("run returned before its first round: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the first round's dump did not start within a minute")
	}
	otherBefore := other.dumpCount()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stopping notified while the first round's dump is under way", func() bool { return n.count("stopping") == 1 })
	unblock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not return within a minute of the dump's end")
	}
	if n.count("ready") != 0 {
		t.Errorf("ready notified, though stopped before the first round ended: %v", n)
	}
	if got := other.dumpCount(); got != otherBefore {
		t.Errorf("the rest of the round ran after the stop: the other namespace dumped %d times, %d before the stop", got, otherBefore)
	}
	if h.out.closed != 1 {
		t.Errorf("sinks closed %d times at shutdown, want 1", h.out.closed)
	}
	if _, err := os.Stat(cfg.StateFile); err != nil {
		t.Errorf("state not saved at shutdown: %v", err)
	}
	if c := h.clock.timerCount(); c != 0 {
		t.Errorf("%d tickers left running after run returned", c)
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

// TestRunMarksWhereWatchingBegan: the first line a run writes is the
// not_running gap, stamped once the destroy subscription is open (after
// the dumps that opening makes) and before the first poll's dump, so
// that every close after its ts is reported and the sockets still open
// come after it, from that poll.
func TestRunMarksWhereWatchingBegan(t *testing.T) {
	yaml := "interval: 1s\n"
	probes := probeDumps(t, yaml)
	cfg := testConfig(t, yaml)
	n := &fakeNotifier{}
	opts := Options{Notify: n}
	h := newFakeLoop(t, cfg, opts, hostNS())
	h.subs[hostNS().ID] = newFakeSub()
	host := h.kernel[hostNS().ID]
	host.sockets = []snapshot.Socket{listener(7, 22)}
	start := h.clock.Now()
	var firstDump time.Time
	var before []event.Event
	host.onDump = func(k int) {
		switch {
		case k <= probes:
			h.clock.Advance(time.Second) // opening takes time
		case k == probes+1:
			firstDump = h.clock.Now()
			before = slices.Clone(h.out.events)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.d.run(ctx, opts) }()
	waitFor(t, "ready", func() bool { return n.count("ready") == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(before) != 1 || before[0].Kind != event.Gap || before[0].Reason != event.GapNotRunning {
		t.Fatalf("written before the first poll's dump: %v, want one not_running gap", before)
	}
	gap := before[0]
	if opened := start.Add(time.Duration(probes) * time.Second); gap.Time.Before(opened) || gap.Time.After(firstDump) {
		t.Errorf("gap stamped %v, want between the subscription's opening (%v) and the first dump (%v)", gap.Time, opened, firstDump)
	}
	evs := h.out.events
	if len(evs) < 2 || evs[1].Kind != event.Appeared || evs[1].Socket.Cookie != 7 {
		t.Errorf("events: %v, want the gap, then the listener from the first poll", evs)
	}
	if got := kinds(evs)["gap/not_running"]; got != 1 {
		t.Errorf("%d not_running gaps in a run, want 1", got)
	}
}
