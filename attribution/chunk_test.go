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
