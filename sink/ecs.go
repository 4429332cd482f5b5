package sink

import (
	"net/netip"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// ecsVersion is the Elastic Common Schema version the mapping follows
// (docs/ecs.md).
const ecsVersion = "8.11.0"

// ecsEncoder writes events in the Elastic Common Schema; docs/ecs.md is
// the mapping.
type ecsEncoder struct {
	host, version string
	scratch       [64]byte
}

func (e *ecsEncoder) encode(b []byte, ev *event.Event) ([]byte, error) {
	j := jsonObj{b: b}
	j.begin()
	j.timestamp("@timestamp", eventTime(ev))
	j.object("ecs")
	j.str("version", ecsVersion)
	j.finish()
	j.object("agent")
	j.str("type", "connlogd")
	j.str("version", e.version)
	j.finish()
	j.object("log")
	if ev.Kind == event.Gap {
		j.str("level", "warning")
	} else {
		j.str("level", "info")
	}
	j.finish()

	var f flow
	if socketKind(ev) {
		f = flowOf(ev)
	}
	j.object("event")
	if !ev.ID.IsZero() {
		j.strBytes("id", ev.ID.Append(e.scratch[:0]))
	}
	j.str("kind", "event")
	j.strs("category", "network")
	if socketKind(ev) {
		j.strs("type", ecsTypes(ev, &f)...)
	} else {
		j.strs("type", "info")
	}
	if ev.Kind == event.Closed && ev.Failure.Failed() {
		j.str("outcome", "failure")
	}
	j.str("action", ev.Kind.String())
	j.str("module", "connlogd")
	j.str("dataset", "connlogd.events")
	if ev.Reason != "" && (ev.Kind == event.Closed || ev.Kind == event.Gap) {
		j.str("reason", ev.Reason)
	}
	if ev.Kind == event.Closed || ev.Kind == event.Updated {
		j.int("duration", int64(ev.Duration())) // nanoseconds, as ECS wants
		if !ev.FirstSeen.IsZero() {
			j.timestamp("start", ev.FirstSeen)
		}
		if ev.Kind == event.Closed {
			j.timestamp("end", eventTime(ev))
		}
	}
	j.finish()

	j.object("host")
	j.str("hostname", e.host)
	j.str("name", e.host)
	j.finish()

	if socketKind(ev) {
		e.socket(&j, ev, &f)
	}

	j.object("connlogd")
	// ECS has no network namespace field (host.pid_ns_ino is the pid
	// namespace's); gaps carry the namespace they concern too.
	if ev.Netns != 0 {
		j.uint("netns", ev.Netns)
		if ev.NetnsName != "" {
			j.str("netns_name", ev.NetnsName)
		}
	}
	if ev.Kind == event.Gap {
		if ev.Count != 0 {
			j.uint("count", ev.Count)
		}
	} else {
		e.connlogdSocket(&j, ev)
	}
	j.finish()

	j.finish()
	return append(j.b, '\n'), nil
}

// socket writes source (the initiator; absent for a socket without a
// peer), destination (the responder, or the socket's own end) and
// network.
func (e *ecsEncoder) socket(j *jsonObj, ev *event.Event, f *flow) {
	s := &ev.Socket
	c, hasCounters := f.countersOf(ev)
	if f.hasClient {
		j.object("source")
		e.endpoint(j, f.client)
		if hasCounters && c.hasSrcBytes {
			j.uint("bytes", c.srcBytes)
		}
		if hasCounters && c.hasPackets {
			j.uint("packets", c.srcPackets)
		}
		j.finish()
	}
	j.object("destination")
	e.endpoint(j, f.server)
	if hasCounters && c.hasDstBytes {
		j.uint("bytes", c.dstBytes)
	}
	if hasCounters && c.hasPackets {
		j.uint("packets", c.dstPackets)
	}
	j.finish()

	j.object("network")
	j.str("transport", s.Proto.String())
	j.str("type", f.networkType())
	j.str("iana_number", ianaNumber(s.Proto))
	if d := ecsDirection(ev.Direction); d != "" {
		j.str("direction", d)
	}
	if id, ok := appendCommunityID(e.scratch[:0], s.Proto, s.Src, s.Dst); ok {
		j.strBytes("community_id", id)
	}
	if hasCounters && c.hasSrcBytes && c.hasDstBytes {
		j.uint("bytes", c.srcBytes+c.dstBytes)
	}
	if hasCounters && c.hasPackets {
		j.uint("packets", c.srcPackets+c.dstPackets)
	}
	j.finish()

	// The kernel sends no owner in destroy notifications: uid 0 there
	// means unknown, not root.
	if !ev.ShortLived {
		j.object("user")
		j.uintString("id", uint64(s.UID))
		j.finish()
	}

	if ev.Process != nil {
		e.process(j, ev.Process)
	}
	if c := ev.Cgroup; c != nil && c.ContainerID != "" {
		j.object("container")
		j.str("id", c.ContainerID)
		j.finish()
	}
}

// ecsDirection is network.direction for d. connlogd watches one host, so
// ECS wants the host's point of view: "ingress" and "egress", not the
// perimeter's "inbound" and "outbound". A listener carries no traffic
// and so has no direction; it is left out, as an undecided one is
// (connlogd.direction keeps "listen").
func ecsDirection(d event.Direction) string {
	switch d {
	case event.DirectionInbound:
		return "ingress"
	case event.DirectionOutbound:
		return "egress"
	}
	return ""
}

// process writes the owning process; attribution leaves a field empty
// when it could not read it, and the field is then left out. The user is
// the process's effective one, which ECS puts in process.user.
func (e *ecsEncoder) process(j *jsonObj, p *event.Process) {
	j.object("process")
	j.int("pid", int64(p.PID))
	if p.Comm != "" {
		j.str("name", p.Comm)
	}
	if p.Exe != "" {
		j.str("executable", p.Exe)
	}
	if p.Cmdline != "" {
		j.str("command_line", p.Cmdline)
	}
	j.object("user")
	j.uintString("id", uint64(p.UID))
	if p.User != "" {
		j.str("name", p.User)
	}
	j.finish()
	j.finish()
}

// connlogdSocket writes the socket fields ECS has no place for.
func (e *ecsEncoder) connlogdSocket(j *jsonObj, ev *event.Event) {
	s := &ev.Socket
	j.str("state", s.State.String())
	if ev.Kind == event.StateChanged {
		j.str("prev_state", ev.PrevState.String())
	}
	if s.IfIndex != 0 {
		j.uint("ifindex", uint64(s.IfIndex))
	}
	// A string: cookies use all 64 bits, beyond Elasticsearch's long
	// and JavaScript's exact integers.
	j.uintString("cookie", s.Cookie)
	j.uint("inode", uint64(s.Inode))
	if s.CgroupID != 0 {
		j.uint("cgroup_id", s.CgroupID)
	}
	if ev.Direction != event.DirectionUnknown {
		j.str("direction", ev.Direction.String())
	}
	// ECS has no cgroup or systemd unit field; the container id is in
	// container.id.
	if c := ev.Cgroup; c != nil {
		j.str("cgroup", c.Path)
		if c.SystemdUnit != "" {
			j.str("systemd_unit", c.SystemdUnit)
		}
	}
	if ev.Initial && ev.Kind == event.Appeared {
		j.boolean("initial", true)
	}
	if ev.Late {
		j.boolean("late", true)
	}
	if ev.ShortLived {
		j.boolean("short_lived", true)
	}
	if cause := ev.Failure.String(); ev.Kind == event.Closed && cause != "" {
		j.str("failure", cause)
	}
	if (ev.Kind == event.Closed || ev.Kind == event.Updated) && s.Proto == snapshot.ProtoTCP && s.HasInfo {
		if s.Info.Len >= infoLenBytesRecv {
			j.uint("bytes_acked", s.Info.BytesAcked)
		}
		j.uint("retransmits", uint64(s.Info.TotalRetrans))
		j.uint("rtt_us", uint64(s.Info.RTT))
	}
}

func (e *ecsEncoder) endpoint(j *jsonObj, ap netip.AddrPort) {
	j.strBytes("ip", ap.Addr().WithZone("").AppendTo(e.scratch[:0]))
	j.uint("port", uint64(ap.Port()))
}
