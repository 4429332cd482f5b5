package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/filter"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/snapshot"
)

// TestPlanRoundTakesAtLeastOneNamespace: a namespace slower than the whole
// budget is still polled, one per round, and the host's always.
func TestPlanRoundTakesAtLeastOneNamespace(t *testing.T) {
	cands := []candidate{{cost: time.Hour}, {host: true, cost: time.Hour}, {cost: time.Hour}}
	rr := 0
	var got []int
	for range 4 {
		var picks []int
		var short bool
		picks, rr, short = planRound(cands, rr, time.Millisecond)
		if len(picks) != 2 || picks[0] != 1 || !short {
			t.Fatalf("picks %v short %v; want the host then one other, short", picks, short)
		}
		got = append(got, picks[1])
	}
	if want := []int{0, 2, 0, 2}; !equalInts(got, want) {
		t.Errorf("others polled in the order %v; want %v", got, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRoundPollsOtherNamespacesWithinBudget: each tick polls the host's
// namespace, and others only while what their last polls cost fits in a
// fifth of the interval.
func TestRoundPollsOtherNamespacesWithinBudget(t *testing.T) {
	nss := []netns.NS{hostNS()}
	for i := range 10 {
		nss = append(nss, otherNS(i))
	}
	h := newHarness(t, testConfig(t, "interval: 1s\n"), nss...)
	for _, k := range h.kernel {
		k.cost = 50 * time.Millisecond
	}
	h.start() // costs unknown yet: every namespace is polled
	for _, ns := range nss {
		if n := h.kernel[ns.ID].dumpCount(); n != 1 {
			t.Fatalf("first round: %s dumped %d times; want 1", ns, n)
		}
	}
	// Budget 200 ms at 50 ms each: four others a round, in turn.
	for r := range 5 {
		before := map[netns.ID]int{}
		for id, k := range h.kernel {
			before[id] = k.dumpCount()
		}
		h.round()
		others := 0
		for _, ns := range nss {
			n := h.kernel[ns.ID].dumpCount() - before[ns.ID]
			switch {
			case ns.Host && n != 1:
				t.Errorf("round %d: host dumped %d times; want 1", r, n)
			case !ns.Host:
				others += n
			}
		}
		if others != 4 {
			t.Errorf("round %d: %d other namespaces dumped; want 4 (budget 200ms, 50ms each)", r, others)
		}
	}
}

// TestRoundRobinReachesEveryNamespacePast100: with 150 namespaces and a
// budget for 20 a round, every namespace is polled within 8 rounds, and
// none twice before all were polled once.
func TestRoundRobinReachesEveryNamespacePast100(t *testing.T) {
	nss := []netns.NS{hostNS()}
	for i := range 150 {
		nss = append(nss, otherNS(i))
	}
	h := newHarness(t, testConfig(t, "interval: 1s\n"), nss...)
	for _, k := range h.kernel {
		k.cost = 10 * time.Millisecond
	}
	h.start()
	base := map[netns.ID]int{}
	for id, k := range h.kernel {
		base[id] = k.dumpCount()
	}
	for r := 1; r <= 8; r++ {
		h.round()
		lo, hi := 1<<30, 0
		for _, ns := range nss[1:] {
			n := h.kernel[ns.ID].dumpCount() - base[ns.ID]
			lo, hi = min(lo, n), max(hi, n)
		}
		if hi-lo > 1 {
			t.Fatalf("round %d: namespaces polled between %d and %d times; round-robin allows a difference of 1", r, lo, hi)
		}
		if r == 8 && lo == 0 {
			t.Errorf("after 8 rounds of 20, some of 150 namespaces were never polled")
		}
	}
}

// TestOverrunResyncsOncePerInterval: lost destroy notifications are
// reported as a gap and answered by a dump at once, but a namespace is
// resynchronised at most once an interval however often it overruns.
func TestOverrunResyncsOncePerInterval(t *testing.T) {
	ns := hostNS()
	cfg := testConfig(t, "interval: 1s\n")
	h := newHarness(t, cfg)
	h.nss = []netns.NS{ns}
	h.kernel[ns.ID] = &fakeDumper{clock: h.clock}
	h.subs[ns.ID] = newFakeSub()
	h.start()
	w := h.d.watches[ns.ID]
	k, sub := h.kernel[ns.ID], h.subs[ns.ID]
	h.out.take()

	overrun := func() {
		sub.mu.Lock()
		sub.overrun = true
		sub.mu.Unlock()
		h.d.destroyReady(w)
		h.d.finishRounds()
	}
	before := k.dumpCount()
	overrun()
	if got := kinds(h.out.take())["gap/"+event.GapOverrun]; got != 1 {
		t.Errorf("first overrun: %d destroy_overrun gaps; want 1", got)
	}
	if n := k.dumpCount() - before; n != 1 {
		t.Fatalf("first overrun: %d resync dumps; want 1", n)
	}
	h.clock.Advance(300 * time.Millisecond)
	overrun()
	if got := kinds(h.out.take())["gap/"+event.GapOverrun]; got != 1 {
		t.Errorf("second overrun: %d destroy_overrun gaps; want 1", got)
	}
	if n := k.dumpCount() - before; n != 1 {
		t.Errorf("second overrun within the interval: %d dumps in all; want still 1", n)
	}
	h.clock.Advance(time.Second)
	overrun()
	if n := k.dumpCount() - before; n != 2 {
		t.Errorf("overrun an interval later: %d dumps in all; want 2", n)
	}
}

// TestDumpFailureStreakReportsOneGap: a failing dump is reported once per
// streak, its partial table closes nothing, and sockets that went while
// it failed are reported closed once polls work again.
func TestDumpFailureStreakReportsOneGap(t *testing.T) {
	ns := hostNS()
	h := newHarness(t, testConfig(t, ""), ns)
	k := h.kernel[ns.ID]
	k.set(listener(1, 22), listener(2, 80))
	h.start()
	if got := kinds(h.out.take())["appeared"]; got != 2 {
		t.Fatalf("start: %d appeared; want 2", got)
	}
	k.mu.Lock()
	k.fail = errors.New("sock_diag dump: no buffer space")
	k.mu.Unlock()
	k.set(listener(1, 22)) // port 80 closes while dumps fail
	for range 3 {
		h.clock.Advance(time.Second)
		h.round()
	}
	evs := kinds(h.out.take())
	if evs["gap/"+event.GapDumpFailed] != 1 || len(evs) != 1 {
		t.Errorf("three failed polls wrote %v; want one dump_failed gap and nothing else", evs)
	}
	k.mu.Lock()
	k.fail = nil
	k.mu.Unlock()
	h.clock.Advance(time.Second)
	h.round()
	if evs := kinds(h.out.take()); evs["closed/"+event.ReasonGone] != 1 || len(evs) != 1 {
		t.Errorf("first good poll wrote %v; want port 80 closed (gone)", evs)
	}
	k.mu.Lock()
	k.fail = errors.New("again")
	k.mu.Unlock()
	h.clock.Advance(time.Second)
	h.round()
	if got := kinds(h.out.take())["gap/"+event.GapDumpFailed]; got != 1 {
		t.Errorf("a new streak: %d dump_failed gaps; want 1", got)
	}
}

// TestVanishedNamespaceClosesItsSockets: when a namespace goes, its
// sockets are reported closed with reason netns_gone, its handles are
// released, and it is polled no more.
func TestVanishedNamespaceClosesItsSockets(t *testing.T) {
	host, other := hostNS(), otherNS(1)
	h := newHarness(t, testConfig(t, ""), host, other)
	h.kernel[other.ID].set(listener(7, 22), listener(8, 443))
	h.start()
	h.out.take()
	h.nss = []netns.NS{host}
	h.clock.Advance(time.Second)
	if err := h.d.rescan(); err != nil {
		t.Fatal(err)
	}
	evs := h.out.take()
	if got := kinds(evs); got["closed/"+event.ReasonNetnsGone] != 2 || len(got) != 1 {
		t.Errorf("namespace gone: wrote %v; want 2 closed/netns_gone", got)
	}
	for _, ev := range evs {
		if ev.Netns != other.ID.Ino || ev.NetnsName != other.Name {
			t.Errorf("close of %v tagged netns %d %q; want %d %q", ev.Socket.Src, ev.Netns, ev.NetnsName, other.ID.Ino, other.Name)
		}
		if !ev.Time.Equal(h.clock.Now()) {
			t.Errorf("close stamped %v; want the rescan's time %v", ev.Time, h.clock.Now())
		}
	}
	k := h.kernel[other.ID]
	k.mu.Lock()
	closed := k.closed
	k.mu.Unlock()
	if !closed {
		t.Error("the vanished namespace's sock_diag socket is still open")
	}
	n := k.dumpCount()
	h.round()
	if k.dumpCount() != n {
		t.Error("a vanished namespace is still polled")
	}
}

// TestReloadDuringDumpKeepsForgottenSocketsOut: a dump in flight when a
// reload changes the filter was made with the old plan; its result is
// filtered with the new one, so the sockets the reload forgot do not come
// back as appeared.
func TestReloadDuringDumpKeepsForgottenSocketsOut(t *testing.T) {
	ns := hostNS()
	h := newHarness(t, testConfig(t, ""), ns)
	k := h.kernel[ns.ID]
	k.set(listener(1, 22), listener(2, 80))
	h.start()
	if got := kinds(h.out.take())["appeared"]; got != 2 {
		t.Fatalf("start: %d appeared; want 2", got)
	}
	// The new filter runs in the kernel: the fake applies it to requests
	// that carry its program.
	path := writeConfig(t, "filters:\n  exclude:\n    - local_ports: [22]\n")
	newCfg := testConfig(t, "filters:\n  exclude:\n    - local_ports: [22]\n")
	f, err := filter.New(newCfg.Filters)
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	k.kernel = func(bc []byte, s *snapshot.Socket) bool { return f.Match(s) }
	k.gate, k.entered = make(chan struct{}), make(chan struct{})
	k.mu.Unlock()

	h.clock.Advance(time.Second)
	h.d.startRound() // the dump starts under the old plan: no filter
	<-k.entered
	prev, ok := h.d.reload(ReloadRequest{Path: path, Reason: "test"})
	if !ok || prev == nil {
		t.Fatal("reload refused")
	}
	if !h.d.watches[ns.ID].plan.kernelFiltered {
		t.Fatal("the new plan does not filter in the kernel: the test would not reproduce the race")
	}
	close(k.gate)
	k.mu.Lock()
	k.gate = nil
	k.mu.Unlock()
	h.d.finishRounds()
	if evs := h.out.take(); len(evs) != 0 {
		t.Errorf("the dump made across the reload wrote %v (first %v port %d); want nothing: port 22 was forgotten", kinds(evs), evs[0].Kind, evs[0].Socket.Src.Port())
	}
	// The next poll, under the new plan, is filtered by the kernel: still
	// nothing, and port 80 stays tracked.
	h.clock.Advance(time.Second)
	h.round()
	if evs := h.out.take(); len(evs) != 0 {
		t.Errorf("the next poll wrote %v; want nothing", kinds(evs))
	}
	if n := h.d.watches[ns.ID].differ.Len(); n != 1 {
		t.Errorf("%d sockets tracked; want 1 (port 80)", n)
	}
	k.mu.Lock()
	reqs := k.lastReq
	k.mu.Unlock()
	for _, r := range reqs {
		if r.Proto == snapshot.ProtoTCP && len(r.Bytecode) == 0 {
			t.Errorf("request %v carries no filter program under the new plan", r)
		}
	}
}

// TestRefusedReloadKeepsTheRunningPlan: a file that does not load leaves
// the running plan, its generation and the socket table as they were.
func TestRefusedReloadKeepsTheRunningPlan(t *testing.T) {
	ns := hostNS()
	h := newHarness(t, testConfig(t, ""), ns)
	h.kernel[ns.ID].set(listener(1, 22))
	h.start()
	h.out.take()
	running := h.d.plan
	path := writeConfig(t, "filters:\n  exclude:\n    - local_ports: [99999]\n")
	if _, ok := h.d.reload(ReloadRequest{Path: path, Reason: "test"}); ok {
		t.Fatal("a port out of range was accepted")
	}
	if h.d.plan != running || h.d.plan.Gen != 1 {
		t.Errorf("plan replaced (generation %d) by a refused file", h.d.plan.Gen)
	}
	path = writeConfig(t, "interval: 2s\n")
	if _, ok := h.d.reload(ReloadRequest{Path: path, Reason: "test"}); !ok {
		t.Fatal("a valid file was refused")
	}
	if h.d.plan.Gen != 2 || h.d.watches[ns.ID].plan.Plan != h.d.plan {
		t.Errorf("after a reload: generation %d, namespace on generation %d; want 2 and 2", h.d.plan.Gen, h.d.watches[ns.ID].plan.Gen)
	}
	if evs := h.out.take(); len(evs) != 0 {
		t.Errorf("reloads wrote %v; want nothing", kinds(evs))
	}
}
