//go:build linux

package netns

import (
	"testing"
	"time"
)

func TestWatcherReportsOnceUntilForgotten(t *testing.T) {
	w, warns, err := NewWatcher(WatchOptions{Dirs: []string{}})
	if err != nil || len(warns) != 0 {
		t.Fatal(err, warns)
	}
	defer w.Close()
	ns := NS{ID: ID{Dev: 1, Ino: 42}, Path: "/proc/1/ns/net"}
	w.report(ns)
	w.report(ns)
	if c := <-w.Changes(); c.NS != ns || c.Rescan {
		t.Fatalf("got %+v", c)
	}
	select {
	case c := <-w.Changes():
		t.Fatalf("reported twice: %+v", c)
	default:
	}
	w.Forget(ns.ID)
	w.report(ns)
	if c := <-w.Changes(); c.NS != ns {
		t.Fatalf("after Forget got %+v", c)
	}
	// The host's namespace is never reported, and never forgotten.
	w.Forget(w.host)
	w.report(NS{ID: w.host})
	select {
	case c := <-w.Changes():
		t.Fatalf("host reported: %+v", c)
	default:
	}
}

// A caller that does not read loses no namespace silently: what did not
// fit is replaced by a Rescan, and is reported again if seen again.
func TestWatcherFullQueueAsksForRescan(t *testing.T) {
	w, _, err := NewWatcher(WatchOptions{Dirs: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	n := cap(w.out) + 10
	for i := range n {
		w.report(NS{ID: ID{Dev: 1, Ino: uint64(1000 + i)}})
	}
	got := 0
	for range cap(w.out) {
		if c := <-w.Changes(); !c.Rescan {
			got++
		}
	}
	// The next report finds room and sends the Rescan first.
	over := NS{ID: ID{Dev: 1, Ino: uint64(1000 + n - 1)}}
	w.report(over)
	timeout := time.After(10 * time.Second)
	var sawRescan, sawOver bool
	for !sawRescan || !sawOver {
		select {
		case c := <-w.Changes():
			sawRescan = sawRescan || c.Rescan
			sawOver = sawOver || c.NS == over
		case <-timeout:
			t.Fatalf("rescan %v, dropped namespace reported again %v", sawRescan, sawOver)
		}
	}
	if got != cap(w.out) {
		t.Errorf("%d reported before the queue filled, want %d", got, cap(w.out))
	}
}

func TestWatcherSeenIsBounded(t *testing.T) {
	w, _, err := NewWatcher(WatchOptions{Dirs: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range maxSeen + 5 {
		w.known(ID{Dev: 1, Ino: uint64(i + 1)})
	}
	if n := len(w.seen); n > maxSeen {
		t.Errorf("%d remembered, bound %d", n, maxSeen)
	}
	if !w.seenID(w.host) {
		t.Error("the host's namespace was forgotten when the memory was cleared")
	}
}
