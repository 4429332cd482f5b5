package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/netns/fakewatch"
	"github.com/connlogd/connlogd/snapshot"
)

// watchHarness runs openNamespaces on a fake watcher for h's loop.
type watchHarness struct {
	fw     *fakewatch.Watcher
	toLoop chan netns.Change
	opened chan opened
}

func startWatch(t *testing.T, h *harness) *watchHarness {
	t.Helper()
	wh := &watchHarness{fw: fakewatch.New(), toLoop: make(chan netns.Change, 8), opened: make(chan opened, 8)}
	h.d.nsw = wh.fw
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		openNamespaces(wh.fw, h.d.open, &h.d.cfgNow, h.d.log, wh.toLoop, wh.opened, quit)
	}()
	t.Cleanup(func() {
		close(quit)
		wh.fw.Close()
		<-done
	})
	return wh
}

func (wh *watchHarness) nextOpened(t *testing.T) opened {
	t.Helper()
	select {
	case o := <-wh.opened:
		return o
	case <-time.After(30 * time.Second):
		t.Fatal("nothing opened")
	}
	return opened{}
}

// TestWatchedNamespaceOpenedAndAdopted: a namespace the watcher reports
// is opened away from the loop, adopted, and polled at once, ahead of the
// round and of any rescan; its sockets are new, not initial. When it
// vanishes, the rescan closes it and the watcher forgets it.
func TestWatchedNamespaceOpenedAndAdopted(t *testing.T) {
	host, other := hostNS(), otherNS(1)
	h := newHarness(t, testConfig(t, "namespaces: all\n"), host)
	k := &fakeDumper{clock: h.clock}
	k.set(listener(7, 22))
	h.kernel[other.ID] = k
	h.start()
	h.out.take()
	wh := startWatch(t, h)

	wh.fw.Send(netns.Change{NS: other})
	o := wh.nextOpened(t)
	if o.err != nil || o.ns.ID != other.ID {
		t.Fatalf("opened %+v", o)
	}
	probes := k.dumpCount() // openHandles probes each request with a dump
	if probes == 0 {
		t.Fatal("the namespace was not probed where it was opened")
	}
	h.d.adopt(o)
	if h.d.watches[other.ID] == nil {
		t.Fatal("not adopted")
	}
	h.d.finishRounds()
	if k.dumpCount() == probes {
		t.Error("not polled when adopted")
	}
	evs := h.out.take()
	if got := kinds(evs); got["appeared"] != 1 {
		t.Fatalf("wrote %v; want the listener appeared", got)
	}
	for _, ev := range evs {
		if ev.Initial || ev.Netns != other.ID.Ino || ev.NetnsName != other.Name {
			t.Errorf("appeared %+v: want not initial, tagged %d %q", ev, other.ID.Ino, other.Name)
		}
	}

	// Discovery never found it (the rescan's list lacks it): it is gone.
	h.clock.Advance(time.Second)
	if err := h.d.rescan(); err != nil {
		t.Fatal(err)
	}
	if got := kinds(h.out.take()); got["closed/"+event.ReasonNetnsGone] != 1 {
		t.Errorf("vanished: wrote %v", got)
	}
	if f := wh.fw.Forgotten(); len(f) != 1 || f[0] != other.ID {
		t.Errorf("forgotten %v; want %v", f, other.ID)
	}
}

// TestWatchedNamespaceThatCannotBeOpenedIsForgotten: a namespace gone
// before it could be opened is left to the rescan, and reported again if
// the watcher sees it again.
func TestWatchedNamespaceThatCannotBeOpenedIsForgotten(t *testing.T) {
	h := newHarness(t, testConfig(t, "namespaces: all\n"), hostNS())
	h.start()
	wh := startWatch(t, h)
	gone := otherNS(2) // no kernel entry: the opener fails
	wh.fw.Send(netns.Change{NS: gone})
	o := wh.nextOpened(t)
	if o.err == nil {
		t.Fatal("opened a namespace the kernel does not have")
	}
	h.d.adopt(o)
	if h.d.watches[gone.ID] != nil {
		t.Error("watched")
	}
	if f := wh.fw.Forgotten(); len(f) != 1 || f[0] != gone.ID {
		t.Errorf("forgotten %v", f)
	}
}

// TestAdoptAfterTheRescanKeepsTheFirst: when the rescan opened the
// namespace first, what the watcher's opener opened is closed unused.
func TestAdoptAfterTheRescanKeepsTheFirst(t *testing.T) {
	host, other := hostNS(), otherNS(3)
	h := newHarness(t, testConfig(t, "namespaces: all\n"), host, other)
	h.start()
	first := h.d.watches[other.ID]
	wh := startWatch(t, h)
	wh.fw.Send(netns.Change{NS: other})
	o := wh.nextOpened(t)
	h.d.adopt(o)
	if h.d.watches[other.ID] != first {
		t.Error("the rescan's namespace was replaced")
	}
	if len(h.d.order) != 2 {
		t.Errorf("%d namespaces polled, want 2", len(h.d.order))
	}
}

// TestWatcherRescanAndListedNamespacesGoToTheLoop: a Rescan change, and
// any change while namespaces are listed rather than all watched, reach
// the loop, which lists them again; nothing is opened for them.
func TestWatcherRescanAndListedNamespacesGoToTheLoop(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		c    netns.Change
	}{
		{"namespaces: all\n", netns.Change{Rescan: true}},
		{"namespaces: [web]\n", netns.Change{NS: otherNS(4)}},
	} {
		h := newHarness(t, testConfig(t, tc.yaml), hostNS())
		wh := startWatch(t, h)
		wh.fw.Send(tc.c)
		select {
		case got := <-wh.toLoop:
			if got.Rescan != tc.c.Rescan || got.NS != tc.c.NS {
				t.Errorf("%s: loop got %+v", tc.yaml, got)
			}
		case o := <-wh.opened:
			t.Errorf("%s: opened %+v", tc.yaml, o.ns)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: nothing reached the loop", tc.yaml)
		}
	}
}

// TestShortLivedSocketsGetTheNamespacesContainer: a socket known only
// from a destroy notification carries no cgroup; in a container's
// namespace it gets that container's id, learned from a socket with a
// container's cgroup, and never in the host's namespace.
func TestShortLivedSocketsGetTheNamespacesContainer(t *testing.T) {
	const ctr = "45ea1a6a804e7788d39c8de42baf74cf00297ef44c6b258c7e053ecf6efab10a"
	host, other := hostNS(), otherNS(5)
	h := newHarness(t, testConfig(t, "namespaces: all\n"), host, other)
	h.start()
	w := h.d.watches[other.ID]
	withCgroup := event.Event{Kind: event.Appeared, Cgroup: &event.Cgroup{ContainerID: ctr}}
	w.nameContainer(&withCgroup)
	short := event.Event{Kind: event.Closed, ShortLived: true}
	w.nameContainer(&short)
	if short.ContainerID() != ctr {
		t.Errorf("short-lived socket's container %q, want %q", short.ContainerID(), ctr)
	}
	hw := h.d.watches[host.ID]
	hw.nameContainer(&withCgroup)
	hostShort := event.Event{Kind: event.Closed, ShortLived: true}
	hw.nameContainer(&hostShort)
	if hostShort.ContainerID() != "" {
		t.Error("the host's namespace was given a container")
	}
}

// TestVanishedNamespaceDrainsItsQueuedCloses: closes queued in a
// namespace's destroy subscription when the rescan finds it gone are
// logged, not dropped with its handles.
func TestVanishedNamespaceDrainsItsQueuedCloses(t *testing.T) {
	host, other := hostNS(), otherNS(6)
	h := newHarness(t, testConfig(t, "namespaces: all\n"), host, other)
	sub := newFakeSub()
	h.subs[other.ID] = sub
	h.start()
	h.out.take()
	s := listener(9, 8080)
	s.State = snapshot.StateEstablished
	s.Dst = netip.MustParseAddrPort("10.0.0.2:40000")
	sub.push(s)
	h.nss = []netns.NS{host}
	h.clock.Advance(time.Second)
	if err := h.d.rescan(); err != nil {
		t.Fatal(err)
	}
	got := kinds(h.out.take())
	if got["appeared"] != 1 || got["closed/"+event.ReasonDestroyed] != 1 {
		t.Errorf("wrote %v; want the queued connection appeared and closed (destroyed)", got)
	}
}

// TestNamespaceNamedLater: a namespace first found unnamed (through the
// process that made it) takes its name when found through its bind
// file, by the rescan or the watcher.
func TestNamespaceNamedLater(t *testing.T) {
	host, other := hostNS(), otherNS(7)
	unnamed := other
	unnamed.Name = ""
	h := newHarness(t, testConfig(t, "namespaces: all\n"), host, unnamed)
	h.start()
	if w := h.d.watches[other.ID]; w == nil || w.ns.Name != "" {
		t.Fatal("setup")
	}
	h.nss = []netns.NS{host, other}
	if err := h.d.rescan(); err != nil {
		t.Fatal(err)
	}
	if got := h.d.watches[other.ID].ns.Name; got != other.Name {
		t.Errorf("after the rescan: name %q, want %q", got, other.Name)
	}
	// And through the watcher, when it reports the bind file.
	third := otherNS(8)
	unnamed3 := third
	unnamed3.Name = ""
	h.kernel[third.ID] = &fakeDumper{clock: h.clock}
	h.nss = []netns.NS{host, other, unnamed3}
	if err := h.d.rescan(); err != nil {
		t.Fatal(err)
	}
	wh := startWatch(t, h)
	wh.fw.Send(netns.Change{NS: third})
	h.d.adopt(wh.nextOpened(t))
	if got := h.d.watches[third.ID].ns.Name; got != third.Name {
		t.Errorf("after the watcher's report: name %q, want %q", got, third.Name)
	}
}

// TestReloadStartsTheWatcherItNeeds: a reload from the host alone to
// every namespace starts the watcher of bind directories and process
// starts, and a namespace it then reports is opened and adopted at once,
// not at the next rescan; a reload back to the host alone stops it.
func TestReloadStartsTheWatcherItNeeds(t *testing.T) {
	host, other := hostNS(), otherNS(1)
	h := newHarness(t, testConfig(t, ""), host)
	var started []netns.WatchOptions
	var fw *fakewatch.Watcher
	h.d.watchStart = func(o netns.WatchOptions) (netns.Watcher, []error, error) {
		started = append(started, o)
		fw = fakewatch.New()
		return fw, nil, nil
	}
	k := &fakeDumper{clock: h.clock}
	k.set(listener(7, 22))
	h.kernel[other.ID] = k
	h.start()
	h.d.watchNamespaces()
	if len(started) != 0 || h.d.nsw != nil {
		t.Fatalf("a watcher started with only the host watched: %v", started)
	}
	h.out.take()

	if _, ok := h.d.reload(ReloadRequest{Path: writeConfig(t, "namespaces: all\n"), Reason: "test"}); !ok {
		t.Fatal("reload refused")
	}
	if len(started) != 1 || !started[0].Procs || h.d.nsw == nil {
		t.Fatalf("after a reload to all: watchers started %v; want one that watches process starts", started)
	}
	// The rescan of the reload listed the host only (discovery here
	// knows no other): the watcher reports the new one.
	fw.Send(netns.Change{NS: other})
	var o opened
	select {
	case o = <-h.d.nsOpened:
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher started at the reload opened nothing")
	}
	h.d.adopt(o)
	h.d.finishRounds()
	if got := kinds(h.out.take()); got["appeared"] != 1 {
		t.Errorf("the namespace reported after the reload: wrote %v; want its listener appeared", got)
	}

	if _, ok := h.d.reload(ReloadRequest{Path: writeConfig(t, "namespaces: host\n"), Reason: "test"}); !ok {
		t.Fatal("reload refused")
	}
	if h.d.nsw != nil || h.d.nsOpened != nil || len(started) != 1 {
		t.Errorf("after a reload back to the host: watcher %v, %d started; want none running", h.d.nsw, len(started))
	}
	select {
	case _, open := <-fw.Changes():
		if open {
			t.Error("the watcher no longer needed still reports")
		}
	default:
		t.Error("the watcher no longer needed was not closed")
	}
}
