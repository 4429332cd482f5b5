package attribution

import (
	"testing"

	"github.com/connlogd/connlogd/event"
)

// TestRefreshInChunks: a dump refreshed chunk by chunk gives each chunk's
// new sockets their owners before the chunk's events are annotated,
// lists the processes once for the whole dump, and judges a new
// connection against the listeners of the chunks so far (a UDP socket
// that connected is no inbound connection to itself).
func TestRefreshInChunks(t *testing.T) {
	f := newFakeFS()
	f.add(40, "app", "/", 500, 501, 502)
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	ln := withID(sock(tcp, listen, "10.0.0.5:8080", "0.0.0.0:0"), 1, 400, 0)
	u := withID(sock(udp, closeState, "0.0.0.0:41000", "0.0.0.0:0"), 9, 900, 0)
	tr.Refresh(tableOf(ln, u))
	listed := f.listings

	acc := withID(sock(tcp, established, "10.0.0.5:8080", "10.0.0.9:50000"), 2, 500, 0)
	out := estab(3, 501, 0)
	uc := u
	uc.Dst, uc.State = out.Dst, established
	tr.BeginRefresh()
	tr.RefreshChunk(tableOf(ln, acc))
	if ev := annotated(tr, event.Appeared, acc); pidOf(ev) != 40 || ev.Direction != event.DirectionInbound {
		t.Errorf("first chunk's connection: pid %d, %q; want 40, inbound", pidOf(ev), ev.Direction)
	}
	tr.RefreshChunk(tableOf(out, uc))
	if ev := annotated(tr, event.Appeared, out); pidOf(ev) != 40 || ev.Direction != event.DirectionOutbound {
		t.Errorf("second chunk's connection: pid %d, %q; want 40, outbound", pidOf(ev), ev.Direction)
	}
	if ev := annotated(tr, event.Appeared, uc); ev.Direction != event.DirectionOutbound {
		t.Errorf("UDP socket that connected: %q; want outbound", ev.Direction)
	}
	tr.EndRefresh(true)
	if n := f.listings - listed; n != 1 {
		t.Errorf("the dump listed the processes %d times; want once", n)
	}
	// A later dump that fails after its first chunk: the sockets it did
	// not reach stay remembered, not absent.
	tr.BeginRefresh()
	tr.RefreshChunk(tableOf(ln))
	tr.EndRefresh(false)
	for range keepRefreshes {
		tr.BeginRefresh()
		tr.RefreshChunk(tableOf(ln, acc))
		tr.EndRefresh(false)
	}
	if ev := annotated(tr, event.Closed, out); pidOf(ev) != 40 {
		t.Errorf("after failed dumps that did not reach it: pid %d; want 40", pidOf(ev))
	}
}

// TestSecondLookAtTheNextDump: a socket a chunk's round missed gets its
// second look once its namespace's next dump has listed it again, not at
// the end of the dump that missed it. Made after its process was read
// whole in an earlier chunk of that dump, it is then found (in the same
// dump, the "read in this dump" skip missed it a second time, and it was
// given up as unknown); closed before the next dump, it costs no read at
// all (at the same dump's end, every process was read again for it, and
// under churn that is most of the misses).
func TestSecondLookAtTheNextDump(t *testing.T) {
	f := newFakeFS()
	p := f.add(40, "app", "/", 500)
	for pid := int32(100); pid < 110; pid++ {
		f.add(pid, "idle", "/", uint32(pid)*10) // sockets no Tracker has
	}
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	other := r.NewTracker() // another namespace's
	a := estab(1, 500, 0)
	// x, which no process holds, makes the first dump read every
	// process: their counts, unchanged after, let the next first looks
	// skip them.
	x := estab(7, 777, 0)
	tr.Refresh(tableOf(a, x))

	p.fds[9] = 501
	b := estab(2, 501, 0)
	gone := estab(3, 502, 0) // closed before the round read /proc
	late := estab(4, 503, 0)
	tr.BeginRefresh()
	tr.RefreshChunk(tableOf(b)) // app is read whole: it holds b
	p.fds[10] = 503             // late is made after that read
	tr.RefreshChunk(tableOf(gone, late))
	tr.RefreshChunk(tableOf(a))
	tables, links := f.tables, f.links
	tr.EndRefresh(true)
	if f.tables != tables || f.links != links {
		t.Errorf("the dump's end read %d tables and %d links for its misses; want none before the next dump", f.tables-tables, f.links-links)
	}

	// Another namespace's dump is not the one the misses wait for.
	o := estab(9, 401, 0)
	f.add(50, "other", "/", 401)
	tables = f.tables
	other.Refresh(tableOf(o))
	if n := f.tables - tables; n != 2 {
		// Not every process, as a second look would: the new process,
		// and app, whose descriptor count changed.
		t.Errorf("another namespace's dump read %d tables; want 2 (its new socket's process, and app)", n)
	}
	if pidOf(annotated(other, event.Appeared, o)) != 50 {
		t.Error("the other namespace's socket has no owner")
	}

	tr.Refresh(tableOf(a, b, late)) // gone has closed
	if got := pidOf(annotated(tr, event.StateChanged, late)); got != 40 {
		t.Errorf("the socket made after its process was read: owner %d; want 40", got)
	}
	if got := pidOf(annotated(tr, event.StateChanged, b)); got != 40 {
		t.Errorf("b: owner %d; want 40", got)
	}

	// A miss that closed before the next dump: no read at all.
	p.fds[11] = 504
	gone2 := estab(5, 505, 0) // listed, closed before the round
	tr.BeginRefresh()
	tr.RefreshChunk(tableOf(a, b, late, gone2))
	tr.EndRefresh(true)
	tables, links = f.tables, f.links
	tr.Refresh(tableOf(a, b, late))
	tr.Refresh(tableOf(a, b, late))
	if f.tables != tables || f.links != links {
		t.Errorf("a miss that closed cost %d tables and %d links at the next dumps; want none", f.tables-tables, f.links-links)
	}
}
