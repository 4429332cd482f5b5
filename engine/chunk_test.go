package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// A dump is diffed chunk by chunk as it is read. The order rule: before
// a chunk is diffed, every destroy notification queued by the time that
// chunk was read is taken, so that a socket the chunk lists although it
// was destroyed meanwhile is known for a short-lived connection, reported
// once, by its notification; not announced by the poll, then closed.
func TestChunkDiffedAfterNotificationsQueuedBeforeIt(t *testing.T) {
	h, k, sub := stampHarness(t, "", time.Millisecond)
	h.d.chunkSize = 2
	a, b, c, d := conn(1, 40000), conn(2, 40001), conn(3, 40002), conn(4, 40003)
	k.set(a, b, c, d)
	h.start()
	if n := len(h.out.take()); n != 4 {
		t.Fatalf("first poll wrote %d events; want 4", n)
	}
	h.clock.Advance(time.Second)
	k.chunkCost = 10 * time.Millisecond
	e := conn(5, 40004) // opens and closes while the dump runs
	cw := c
	cw.State = snapshot.StateCloseWait
	var queuedAt, chunkRead [3]time.Time
	// The worker reads ahead of the loop: so that e is queued after the
	// loop took the first chunk, the second waits until it wrote b's
	// close, which the first chunk's drain read.
	bClosed := make(chan struct{})
	h.d.met = eventHook{func(ev *event.Event) {
		if ev.Kind == event.Closed && ev.Socket.Cookie == 2 {
			close(bClosed)
		}
	}}
	k.onChunk = func(n int) {
		switch n {
		case 1:
			// b's close, queued before the first chunk is read.
			queuedAt[1] = h.clock.Now()
			sub.close(b, queuedAt[1])
		case 2:
			select {
			case <-bClosed:
			case <-time.After(time.Minute):
				t.Error("the loop never took the first chunk")
			}
			// e appeared and was destroyed between the two chunks; the
			// kernel's walk, racing with its destroy, still lists it in
			// the second. c changes state.
			k.set(a, b, cw, e, d)
			h.clock.Advance(time.Millisecond)
			queuedAt[2] = h.clock.Now()
			sub.close(e, queuedAt[2])
		}
		if n <= 2 {
			chunkRead[n] = h.clock.Now().Add(k.chunkCost)
		}
	}
	k.set(a, b, c, d)
	h.round()
	evs := h.out.take()
	var got []string
	for _, ev := range evs {
		s := ev.Kind.String() + ":" + itoa(int(ev.Socket.Cookie))
		if ev.ShortLived {
			s += ":short"
		}
		got = append(got, s)
	}
	// b: destroyed; e: short-lived, appeared and closed by its
	// notification only; c: state changed, from the second chunk.
	want := []string{"closed:ca", "appeared:fa:short", "closed:fa:short", "state_changed:da"}
	if len(got) != len(want) {
		t.Fatalf("events %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v; want %v", got, want)
		}
	}
	for _, ev := range evs {
		switch ev.Socket.Cookie {
		case 2:
			if ev.Time.Before(queuedAt[1]) {
				t.Errorf("close of b stamped %v, before it was queued at %v", ev.Time, queuedAt[1])
			}
		case 5:
			if ev.Time.Before(queuedAt[2]) {
				t.Errorf("%s of e stamped %v, before it was queued at %v", ev.Kind, ev.Time, queuedAt[2])
			}
		case 3:
			if !ev.Time.Equal(chunkRead[2]) {
				t.Errorf("state change of c stamped %v; want %v, when the chunk that showed it was read", ev.Time, chunkRead[2])
			}
		}
	}
	// The next dump lists e no more: nothing is left to report.
	k.mu.Lock()
	k.onChunk = nil
	k.mu.Unlock()
	k.set(a, cw, d)
	h.clock.Advance(time.Second)
	h.round()
	if evs := h.out.take(); len(evs) != 0 {
		t.Errorf("next poll wrote %v; want nothing", kinds(evs))
	}
	if st := h.d.watches[hostNS().ID].differ.Len(); st != 3 {
		t.Errorf("%d sockets tracked; want 3", st)
	}
}

// chunkedStart is a loop dumping in chunks of 2 sockets, started on the
// connections a, b, c, d, its first poll's events taken, a second later.
func chunkedStart(t *testing.T) (h *harness, k *fakeDumper, a, b, c, d snapshot.Socket) {
	h, k, _ = stampHarness(t, "", 0)
	h.d.chunkSize = 2
	a, b, c, d = conn(1, 40000), conn(2, 40001), conn(3, 40002), conn(4, 40003)
	k.set(a, b, c, d)
	h.start()
	h.out.take()
	h.clock.Advance(time.Second)
	return h, k, a, b, c, d
}

// TestChunkDuplicates: a socket the kernel lists in two chunks (the table
// changed under its walk) makes one record, no event of its own, and no
// suspect; a socket no chunk listed is looked up.
func TestChunkDuplicates(t *testing.T) {
	h, k, a, b, c, d := chunkedStart(t)
	k.onChunk = func(n int) {
		if n == 2 {
			// c moved ahead in the table: the second chunk lists a
			// again, and no chunk lists c, alive.
			k.set(c, b, a, d)
		}
	}
	h.round()
	if evs := h.out.take(); len(evs) != 0 {
		t.Fatalf("wrote %v; want nothing", kinds(evs))
	}
	w := h.d.watches[hostNS().ID]
	if st := w.differ.Stats(); st.Duplicates != 1 || st.Skipped != 1 {
		t.Errorf("differ stats %+v; want 1 duplicate, 1 skipped (c, looked up alive)", st)
	}
	if w.counts[0][0] != 4 {
		t.Errorf("counted %d IPv4 TCP sockets; want the 4 listed", w.counts[0][0])
	}
}

// TestChunkedDumpFails: a dump that fails after a chunk reports what the
// chunk showed, a gap, and no close for the sockets it did not reach.
func TestChunkedDumpFails(t *testing.T) {
	h, k, a, b, c, d := chunkedStart(t)
	ae := a
	ae.State = snapshot.StateFinWait1
	k.set(ae, b, c, d)
	k.onChunk = func(n int) {
		if n == 2 {
			k.mu.Lock()
			k.fail = errors.New("dump interrupted")
			k.mu.Unlock()
		}
	}
	h.round()
	got := kinds(h.out.take())
	if got["state_changed"] != 1 || got["gap/"+event.GapDumpFailed] != 1 || len(got) != 2 {
		t.Fatalf("wrote %v; want a's state change and a dump_failed gap", got)
	}
	k.mu.Lock()
	k.onChunk, k.fail = nil, nil
	k.mu.Unlock()
	h.clock.Advance(time.Second)
	k.set(ae, b, d)
	h.round()
	if got := kinds(h.out.take()); got["closed/"+event.ReasonGone] != 1 || len(got) != 1 {
		t.Errorf("next poll wrote %v; want c's close only", got)
	}
}

// eventHook is Metrics that hands each event written to fn.
type eventHook struct{ fn func(*event.Event) }

func (m eventHook) Event(ev *event.Event) { m.fn(ev) }
func (eventHook) Polled(time.Duration)    {}
func (eventHook) Sockets([2][2]int)       {}
func (eventHook) Netlink(uint64, uint64)  {}
func (eventHook) Overrun()                {}
func (eventHook) DumpFailed()             {}
func (eventHook) Reloaded(bool)           {}
func (eventHook) Namespaces(int)          {}
func (eventHook) Sinks(Output)            {}
