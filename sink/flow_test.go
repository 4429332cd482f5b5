package sink

import (
	"net/netip"
	"testing"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

func TestFlowOrientation(t *testing.T) {
	mk := func(fam snapshot.Family, src, dst string, dir event.Direction) *event.Event {
		return &event.Event{Kind: event.Appeared, Direction: dir, Socket: snapshot.Socket{Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: fam, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}}}
	}
	v4, v6 := snapshot.FamilyIPv4, snapshot.FamilyIPv6
	for _, tt := range []struct {
		name           string
		ev             *event.Event
		client, server string // client "" for none
		v4             bool
	}{
		{"outbound", mk(v4, "10.0.0.5:40000", "10.0.0.9:443", event.DirectionOutbound), "10.0.0.5:40000", "10.0.0.9:443", true},
		{"inbound: the remote end initiated", mk(v4, "10.0.0.5:80", "10.0.0.9:50000", event.DirectionInbound), "10.0.0.9:50000", "10.0.0.5:80", true},
		{"unknown direction keeps local first", mk(v6, "[2001:db8::1]:40000", "[2001:db8::2]:22", event.DirectionUnknown), "[2001:db8::1]:40000", "[2001:db8::2]:22", false},
		{"listener: no fake peer", mk(v4, "0.0.0.0:22", "0.0.0.0:0", event.DirectionListen), "", "0.0.0.0:22", true},
		{"bound only", mk(v6, "[::1]:5000", "[::]:0", event.DirectionUnknown), "", "[::1]:5000", false},
		{"IPv4-mapped connection is IPv4 on the wire", mk(v6, "[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:41000", event.DirectionInbound), "127.0.0.1:41000", "127.0.0.1:8080", true},
		{"IPv4-mapped listener", mk(v6, "[::ffff:127.0.0.1]:8080", "[::]:0", event.DirectionListen), "", "127.0.0.1:8080", true},
		{"dual-stack listener is IPv6", mk(v6, "[::]:8080", "[::]:0", event.DirectionListen), "", "[::]:8080", false},
		{"zone dropped", mk(v6, "[fe80::1%eth0]:22", "[fe80::2]:40110", event.DirectionInbound), "[fe80::2]:40110", "[fe80::1]:22", false},
	} {
		f := flowOf(tt.ev)
		client := ""
		if f.hasClient {
			client = f.client.String()
		}
		if client != tt.client || f.server.String() != tt.server || f.v4 != tt.v4 {
			t.Errorf("%s: client %q server %s v4 %v, want %q %s %v", tt.name, client, f.server, f.v4, tt.client, tt.server, tt.v4)
		}
	}
}

func TestFlowCounters(t *testing.T) {
	s := tcp6 // bytes_sent 1234, bytes_received 5678, segs_out 20, segs_in 18
	for _, tt := range []struct {
		dir                event.Direction
		src, dst, sp, dpkt uint64
	}{
		{event.DirectionOutbound, 1234, 5678, 20, 18},
		{event.DirectionInbound, 5678, 1234, 18, 20},
	} {
		ev := &event.Event{Kind: event.Updated, Direction: tt.dir, Socket: s}
		f := flowOf(ev)
		c, ok := f.countersOf(ev)
		if !ok || c.srcBytes != tt.src || c.dstBytes != tt.dst || c.srcPackets != tt.sp || c.dstPackets != tt.dpkt || !c.hasSrcBytes || !c.hasDstBytes || !c.hasPackets {
			t.Errorf("%v: %+v %v", tt.dir, c, ok)
		}
	}
	// Before Linux 4.19 there is no bytes_sent: that side is unknown.
	old := s
	old.Info.Len = 200
	ev := &event.Event{Kind: event.Closed, Direction: event.DirectionInbound, Socket: old}
	f := flowOf(ev)
	if c, _ := f.countersOf(ev); !c.hasSrcBytes || c.hasDstBytes {
		t.Errorf("old kernel, inbound: %+v", c)
	}
	for _, k := range []event.Kind{event.Appeared, event.StateChanged, event.Snapshot} {
		ev := &event.Event{Kind: k, Socket: s}
		f := flowOf(ev)
		if _, ok := f.countersOf(ev); ok {
			t.Errorf("%v carries counters", k)
		}
	}
}
