package sink

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/schematest"
	"github.com/connlogd/connlogd/snapshot"
)

// conformanceEvents are the schema events and, for each kind, the socket
// shapes whose mapping differs: listeners, sockets without a peer,
// IPv4-mapped flows, both directions, every failure.
func conformanceEvents() []event.Event {
	evs := schemaEvents()
	sock := func(proto snapshot.Proto, fam snapshot.Family, st snapshot.State, src, dst string) snapshot.Socket {
		return snapshot.Socket{Key: snapshot.Key{Proto: proto, Family: fam, Cookie: uint64(9000 + len(evs)),
			Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}, State: st, UID: 1000, Inode: 4242}
	}
	tcp, udp := snapshot.ProtoTCP, snapshot.ProtoUDP
	v4, v6 := snapshot.FamilyIPv4, snapshot.FamilyIPv6
	shapes := []struct {
		s   snapshot.Socket
		dir event.Direction
	}{
		{sock(tcp, v6, snapshot.StateEstablished, "[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:41000"), event.DirectionInbound},
		{sock(tcp, v6, snapshot.StateEstablished, "[::ffff:127.0.0.1]:41000", "[::ffff:127.0.0.1]:8080"), event.DirectionOutbound},
		{sock(tcp, v6, snapshot.StateListen, "[::ffff:127.0.0.1]:8080", "[::]:0"), event.DirectionListen},
		{sock(tcp, v6, snapshot.StateListen, "[::]:8080", "[::]:0"), event.DirectionListen},
		{sock(tcp, v4, snapshot.StateClose, "127.0.0.1:5000", "0.0.0.0:0"), event.DirectionUnknown},
		{sock(udp, v4, snapshot.StateClose, "127.0.0.1:5353", "0.0.0.0:0"), event.DirectionListen},
		{sock(udp, v6, snapshot.StateEstablished, "[::1]:40000", "[::1]:53"), event.DirectionOutbound},
		{sock(tcp, v6, snapshot.StateEstablished, "[2001:db8::1]:40000", "[2001:db8::2]:22"), event.DirectionUnknown},
	}
	withInfo := func(s snapshot.Socket) snapshot.Socket {
		if s.Proto == tcp {
			s.HasInfo = true
			s.Info = snapshot.TCPInfo{Len: 280, RTT: 50, BytesAcked: 11, BytesReceived: 22, SegsOut: 3, SegsIn: 4, BytesSent: 10}
		}
		return s
	}
	for _, sh := range shapes {
		for _, k := range []event.Kind{event.Appeared, event.StateChanged, event.Updated, event.Closed, event.Snapshot} {
			ev := event.Event{Kind: k, Time: t0, Socket: withInfo(sh.s), FirstSeen: t0.Add(-time.Minute), Direction: sh.dir,
				PrevState: snapshot.StateSynSent, Netns: 4026531840}
			if k == event.Closed {
				ev.Reason = event.ReasonDestroyed
			}
			evs = append(evs, ev)
		}
	}
	for _, f := range []event.Failure{event.FailedRefused, event.FailedTimeout, event.FailedUnknown} {
		s := sock(tcp, v4, snapshot.StateSynSent, "10.0.0.5:48916", "10.0.0.9:7001")
		evs = append(evs, event.Event{Kind: event.Closed, Time: t0, Socket: s, FirstSeen: t0, Reason: event.ReasonDestroyed,
			Direction: event.DirectionOutbound, Failure: f})
	}
	return append(evs,
		event.Event{Kind: event.Gap, Time: t0, Reason: "sink_dropped", Count: 12},
		event.Event{Kind: event.Gap, Time: t0, Reason: "dump_failed"})
}

// TestConformance: every event kind and socket shape, in ECS 8.11.0 and
// OCSF 1.3.0, validated against the official schema files: no
// violation, and the Community IDs of the specification.
func TestConformance(t *testing.T) {
	ecs := schematest.LoadedECS(t).WithCustom("connlogd")
	ocsf := schematest.LoadedOCSF(t)
	evs := conformanceEvents()
	for _, c := range []struct {
		name     string
		s        schema
		validate func([]byte) []schematest.Violation
		cid      string
	}{{"ecs", schemaECS, ecs.Validate, "network.community_id"}, {"ocsf", schemaOCSF, ocsf.Validate, "unmapped.community_id"}} {
		lines := encodeSchema(t, c.s, evs...)
		if len(lines) != len(evs) {
			t.Fatalf("%s: %d lines for %d events", c.name, len(lines), len(evs))
		}
		for i, l := range lines {
			for _, v := range c.validate([]byte(l)) {
				t.Errorf("%s %s: %v\n%s", c.name, evs[i].Kind, v, l)
			}
			ev := &evs[i]
			if ev.Kind == event.Gap {
				continue
			}
			d := decode(t, l)
			got, _ := d.get(c.cid)
			want := oracleCommunityID(ev)
			if g, _ := got.(string); g != want {
				t.Errorf("%s %s %v->%v: community id %q, want %q", c.name, ev.Kind, ev.Socket.Src, ev.Socket.Dst, got, want)
			}
		}
	}
}

// oracleCommunityID is the Community ID the specification gives for ev's
// flow, or "" for a socket without a peer.
func oracleCommunityID(ev *event.Event) string {
	s := &ev.Socket
	src, dst := s.Src.Addr().WithZone(""), s.Dst.Addr().WithZone("")
	if dst.IsUnspecified() || s.Dst.Port() == 0 {
		return ""
	}
	if src.Is4In6() && dst.Is4In6() {
		src, dst = src.Unmap(), dst.Unmap()
	}
	return schematest.CommunityID(0, uint8(s.Proto), src, dst, s.Src.Port(), s.Dst.Port(), true)
}

// TestCommunityIDSpecVectors checks appendCommunityID against the
// specification's TCP, UDP and SCTP vectors of seed 0 in base64, the
// variant connlogd writes.
func TestCommunityIDSpecVectors(t *testing.T) {
	vs, err := schematest.Vectors(schematest.Dir(t))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range vs {
		if !v.PortBased() || v.Seed != 0 || !v.Base64 {
			continue
		}
		sa, da := v.Addrs()
		got, ok := appendCommunityID(nil, snapshot.Proto(v.Proto), netip.AddrPortFrom(sa, v.Sport), netip.AddrPortFrom(da, v.Dport))
		if !ok || string(got) != v.CommunityID {
			t.Errorf("%s %d %s:%d -> %s:%d: %q, want %q", v.Table, v.Proto, v.Saddr, v.Sport, v.Daddr, v.Dport, got, v.CommunityID)
		}
		n++
	}
	if n != 14 {
		t.Errorf("%d vectors checked, want the files' 14", n)
	}
}

// TestConformanceFaultsAreSeen: the validators are the test's teeth; an
// encoder fault of each kind the issue found must fail them.
func TestConformanceFaultsAreSeen(t *testing.T) {
	ecs := schematest.LoadedECS(t).WithCustom("connlogd")
	ocsf := schematest.LoadedOCSF(t)
	ev := attrInbound()
	ecsLine := encodeSchema(t, schemaECS, ev)[0]
	ocsfLine := encodeSchema(t, schemaOCSF, ev)[0]
	for _, f := range []struct {
		name, line, old, new string
		validate             func([]byte) []schematest.Violation
	}{
		{"ECS change type", ecsLine, `"type":["connection","start"]`, `"type":["connection","change"]`, ecs.Validate},
		{"OCSF without profiles", ocsfLine, `"profiles":["host","container"],`, ``, ocsf.Validate},
		{"OCSF community_uid", ocsfLine, `"direction":"Inbound"`, `"direction":"Inbound","community_uid":"1:x"`, ocsf.Validate},
		{"OCSF type_name", ocsfLine, `"type_name":"Network Activity: Open"`, `"type_name":"Network Activity: Opened"`, ocsf.Validate},
	} {
		if !strings.Contains(f.line, f.old) {
			t.Fatalf("%s: %q not in %s", f.name, f.old, f.line)
		}
		if vs := f.validate([]byte(strings.Replace(f.line, f.old, f.new, 1))); len(vs) == 0 {
			t.Errorf("%s: not detected", f.name)
		}
	}
}
