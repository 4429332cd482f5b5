package sink

import (
	"net/netip"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// flow is a socket event as ECS and OCSF describe a connection: from its
// initiator (ECS source, OCSF src_endpoint, "the initiator (client)") to
// its responder (destination, dst_endpoint), where the native schema has
// the local and the remote end. It is the one place that decides the
// orientation, the wire protocol and the counters' sides for both.
type flow struct {
	// client and server are the initiator's and the responder's ends,
	// with IPv4-mapped addresses unmapped when IPv4 is on the wire.
	client, server netip.AddrPort
	// hasClient is false for a socket without a peer (a listener, an
	// unconnected UDP socket, a bound TCP socket): it has only its local
	// end, in server, the end connections are made to.
	hasClient bool
	// localIsClient says the local end initiated: an outbound connection,
	// or one whose direction is unknown (the native schema's orientation
	// is kept then).
	localIsClient bool
	// v4 says IPv4 is on the wire: an IPv4 socket, or an IPv6 one whose
	// addresses are IPv4-mapped.
	v4 bool
}

// flowOf orients ev's socket by its direction.
func flowOf(ev *event.Event) flow {
	s := &ev.Socket
	local, remote := s.Src.Addr().WithZone(""), s.Dst.Addr().WithZone("")
	peer := remote.IsValid() && !remote.IsUnspecified() && s.Dst.Port() != 0
	f := flow{v4: s.Family == snapshot.FamilyIPv4}
	if s.Family == snapshot.FamilyIPv6 && local.Is4In6() && (!peer || remote.Is4In6()) {
		f.v4 = true
		local, remote = local.Unmap(), remote.Unmap()
	}
	l, r := netip.AddrPortFrom(local, s.Src.Port()), netip.AddrPortFrom(remote, s.Dst.Port())
	switch {
	case !peer:
		f.server = l
	case ev.Direction == event.DirectionInbound:
		f.client, f.server, f.hasClient = r, l, true
	default:
		f.client, f.server, f.hasClient, f.localIsClient = l, r, true, true
	}
	return f
}

// counters are a connection's tcp_info totals by side: src what the
// client sent, dst what the server sent. A has flag is false when the
// kernel's tcp_info is too old to hold the field (a zero would be a lie).
type counters struct {
	srcBytes, dstBytes       uint64
	hasSrcBytes, hasDstBytes bool
	srcPackets, dstPackets   uint64
	hasPackets               bool
}

// countersOf returns the counters of ev by side, and false when ev carries
// none: only closed and updated TCP events with tcp_info do.
func (f *flow) countersOf(ev *event.Event) (counters, bool) {
	in := trafficInfo(ev)
	if in == nil {
		return counters{}, false
	}
	sent, hasSent := in.BytesSent, in.Len >= infoLenBytesSent
	recv, hasRecv := in.BytesReceived, in.HasBytes()
	out, inSegs := uint64(in.SegsOut), uint64(in.SegsIn)
	c := counters{hasPackets: in.HasSegs()}
	if f.localIsClient || !f.hasClient {
		c.srcBytes, c.hasSrcBytes, c.dstBytes, c.hasDstBytes = sent, hasSent, recv, hasRecv
		c.srcPackets, c.dstPackets = out, inSegs
	} else {
		c.srcBytes, c.hasSrcBytes, c.dstBytes, c.hasDstBytes = recv, hasRecv, sent, hasSent
		c.srcPackets, c.dstPackets = inSegs, out
	}
	return c, true
}

// networkType is ECS network.type: the protocol on the wire.
func (f *flow) networkType() string {
	if f.v4 {
		return "ipv4"
	}
	return "ipv6"
}

// ipVersion is OCSF connection_info.protocol_ver_id.
func (f *flow) ipVersion() int64 {
	if f.v4 {
		return 4
	}
	return 6
}

// ECS event.type values. ECS allows, for event.category network:
// access, allowed, connection, denied, end, info, protocol and start.
// A state change has no type of its own ("change" is not one of them):
// it is information about a connection.
var (
	ecsConnStart = strArray{"connection", "start"}
	ecsConnEnd   = strArray{"connection", "end"}
	ecsConnInfo  = strArray{"connection", "info"}
	ecsStart     = strArray{"start"}
	ecsEnd       = strArray{"end"}
	ecsInfo      = strArray{"info"}
)

// ecsTypes is event.type for ev: "connection" only for a socket with a
// peer; a listener's appearance is the start of an endpoint, not of a
// connection.
func ecsTypes(ev *event.Event, f *flow) *strArray {
	conn := f.hasClient
	switch ev.Kind {
	case event.Appeared:
		if conn {
			return &ecsConnStart
		}
		return &ecsStart
	case event.Closed:
		if conn {
			return &ecsConnEnd
		}
		return &ecsEnd
	case event.StateChanged, event.Updated, event.Snapshot:
		if conn {
			return &ecsConnInfo
		}
	}
	return &ecsInfo
}
