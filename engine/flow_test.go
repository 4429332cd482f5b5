package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// TestFlowUpdatesFollowTheConfig: off by default; flow_update_interval,
// set by a reload, makes an updated event for a connection every
// interval, with the poll's counters; a reload to 0 stops them.
func TestFlowUpdatesFollowTheConfig(t *testing.T) {
	ns := hostNS()
	h := newHarness(t, testConfig(t, ""), ns)
	k := h.kernel[ns.ID]
	conn := snapshot.Socket{State: snapshot.StateEstablished, HasInfo: true}
	conn.Proto, conn.Family, conn.Cookie = snapshot.ProtoTCP, snapshot.FamilyIPv4, 7
	conn.Src = netip.MustParseAddrPort("10.0.0.1:40000")
	conn.Dst = netip.MustParseAddrPort("10.0.0.2:443")
	conn.Info = snapshot.TCPInfo{Len: 280, BytesAcked: 1}
	k.set(conn, listener(1, 22))
	h.start()
	h.out.take()

	updates := func(rounds int) []event.Event {
		t.Helper()
		var ups []event.Event
		for range rounds {
			h.clock.Advance(time.Second)
			conn.Info.BytesAcked += 100
			k.set(conn, listener(1, 22))
			h.round()
			for _, ev := range h.out.take() {
				if ev.Kind == event.Updated {
					ups = append(ups, ev)
				}
			}
		}
		return ups
	}
	if ups := updates(5); len(ups) != 0 {
		t.Fatalf("%d updated events with the default configuration", len(ups))
	}
	if _, ok := h.d.reload(ReloadRequest{Path: writeConfig(t, "flow_update_interval: 2s\n"), Reason: "test"}); !ok {
		t.Fatal("reload refused")
	}
	ups := updates(6)
	if len(ups) != 3 {
		t.Fatalf("%d updated events in 6 s at 2 s; want 3", len(ups))
	}
	for i, u := range ups {
		if u.Socket.Cookie != 7 || (i > 0 && u.Socket.Info.BytesAcked <= ups[i-1].Socket.Info.BytesAcked) {
			t.Errorf("update %d: cookie %d, bytes_acked %d", i, u.Socket.Cookie, u.Socket.Info.BytesAcked)
		}
	}
	if _, ok := h.d.reload(ReloadRequest{Path: writeConfig(t, "flow_update_interval: 0\n"), Reason: "test"}); !ok {
		t.Fatal("reload refused")
	}
	if ups := updates(5); len(ups) != 0 {
		t.Errorf("%d updated events after turning them off", len(ups))
	}
}
