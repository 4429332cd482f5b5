package sink

import (
	"net/netip"
	"strings"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// ocsfVersion is the OCSF schema version the mapping follows
// (docs/ocsf.md).
const ocsfVersion = "1.3.0"

// OCSF Network Activity (class 4001) activity ids.
const (
	ocsfOpen    = 1
	ocsfClose   = 2
	ocsfTraffic = 6
	ocsfOther   = 99
)

// ocsfEncoder writes events as OCSF Network Activity (socket events) or
// Base Event (gaps); docs/ocsf.md is the mapping.
type ocsfEncoder struct {
	host, version string
	scratch       [64]byte
}

func (o *ocsfEncoder) encode(b []byte, ev *event.Event) ([]byte, error) {
	j := jsonObj{b: b}
	j.begin()
	var classUID, categoryUID, activityID int64
	var className, categoryName, activityName string
	if ev.Kind == event.Gap {
		// A gap is about connlogd's own delivery, not network activity:
		// OCSF's Base Event (class 0) carries it.
		classUID, className, categoryUID, categoryName = 0, "Base Event", 0, "Uncategorized"
		activityID, activityName = ocsfOther, "Gap"
	} else {
		classUID, className, categoryUID, categoryName = 4001, "Network Activity", 4, "Network Activity"
		switch ev.Kind {
		case event.Appeared:
			activityID, activityName = ocsfOpen, "Open"
		case event.Closed:
			activityID, activityName = ocsfClose, "Close"
		case event.StateChanged:
			// OCSF has no activity for a TCP state transition; 99 with
			// the source's own name is the schema's rule for that.
			activityID, activityName = ocsfOther, "State Changed"
		default: // socket: a line of connlogd -once, a report on an open socket
			activityID, activityName = ocsfTraffic, "Traffic"
		}
	}
	j.int("activity_id", activityID)
	j.str("activity_name", activityName)
	j.int("category_uid", categoryUID)
	j.str("category_name", categoryName)
	j.int("class_uid", classUID)
	j.str("class_name", className)
	j.int("type_uid", classUID*100+activityID)
	j.key("type_name")
	j.b = append(j.b, '"')
	j.b = append(j.b, className...)
	j.b = append(j.b, ": "...)
	j.b = append(j.b, activityName...)
	j.b = append(j.b, '"')
	if ev.Kind == event.Gap {
		j.int("severity_id", 3)
		j.str("severity", "Medium")
	} else {
		j.int("severity_id", 1)
		j.str("severity", "Informational")
	}
	t := eventTime(ev)
	j.int("time", t.UnixMilli())

	j.object("metadata")
	j.str("version", ocsfVersion)
	j.object("product")
	j.str("name", "connlogd")
	j.str("vendor_name", "connlogd")
	j.str("version", o.version)
	j.finish()
	j.str("log_name", "connlogd")
	j.str("event_code", ev.Kind.String())
	j.finish()

	j.object("device")
	j.str("hostname", o.host)
	j.int("type_id", 0) // unknown: connlogd cannot tell a server from a desktop
	j.finish()

	if ev.Kind == event.Gap {
		j.key("message")
		j.b = append(j.b, `"events may be missing: `...)
		j.b = appendJSONBody(j.b, ev.Reason)
		j.b = append(j.b, '"')
		j.object("unmapped")
		o.netns(&j, ev)
		j.str("reason", ev.Reason)
		if ev.Count != 0 {
			j.uint("count", ev.Count)
		}
		j.finish()
		j.finish()
		return append(j.b, '\n'), nil
	}

	s := &ev.Socket
	j.object("src_endpoint")
	o.endpoint(&j, s.Src)
	// The container the socket was created in: the local end is the
	// container's. Network Activity has no top-level container (the
	// container profile applies to endpoints and processes), and the
	// process may be unknown while the cgroup is not (short-lived
	// connections).
	if c := ev.Cgroup; c != nil && c.ContainerID != "" {
		j.object("container")
		j.str("uid", c.ContainerID)
		j.finish()
	}
	j.finish()
	j.object("dst_endpoint")
	o.endpoint(&j, s.Dst)
	j.finish()

	j.object("connection_info")
	j.str("protocol_name", s.Proto.String())
	j.int("protocol_num", int64(s.Proto))
	if s.Family == snapshot.FamilyIPv6 {
		j.int("protocol_ver_id", 6)
	} else {
		j.int("protocol_ver_id", 4)
	}
	// direction_id is required: an undecided direction is 0, Unknown.
	dirID, dir := ocsfDirection(ev.Direction)
	j.int("direction_id", dirID)
	j.str("direction", dir)
	if id, ok := appendCommunityID(o.scratch[:0], s.Proto, s.Src, s.Dst); ok {
		j.strBytes("community_uid", id)
	}
	j.finish()

	if ev.Kind == event.Closed {
		if !ev.FirstSeen.IsZero() {
			j.int("start_time", ev.FirstSeen.UnixMilli())
		}
		j.int("end_time", t.UnixMilli())
		j.int("duration", ev.Duration().Milliseconds())
		if s.Proto == snapshot.ProtoTCP && s.HasInfo {
			o.traffic(&j, &s.Info)
		}
	}

	// The kernel sends no owner in destroy notifications: uid 0 there
	// means unknown, not root.
	if !ev.ShortLived || ev.Process != nil {
		j.object("actor")
		if !ev.ShortLived {
			j.object("user")
			j.uintString("uid", uint64(s.UID))
			j.finish()
		}
		if ev.Process != nil {
			o.process(&j, ev.Process)
		}
		j.finish()
	}

	j.object("unmapped")
	o.netns(&j, ev)
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
	if ev.Kind == event.Closed && ev.Reason != "" {
		j.str("reason", ev.Reason)
	}
	if ev.Kind == event.Closed && s.Proto == snapshot.ProtoTCP && s.HasInfo {
		if s.Info.Len >= infoLenBytesRecv {
			j.uint("bytes_acked", s.Info.BytesAcked)
		}
		j.uint("retransmits", uint64(s.Info.TotalRetrans))
		j.uint("rtt_us", uint64(s.Info.RTT))
	}
	j.finish()

	j.finish()
	return append(j.b, '\n'), nil
}

// ocsfDirection is connection_info's direction_id and direction for d,
// from this host's point of view. A listener initiates nothing and
// accepts nothing yet: OCSF has no value for it, so it is 99 (Other) with
// the source's own name, as OCSF prescribes for 99.
func ocsfDirection(d event.Direction) (int64, string) {
	switch d {
	case event.DirectionInbound:
		return 1, "Inbound"
	case event.DirectionOutbound:
		return 2, "Outbound"
	case event.DirectionListen:
		return 99, "Listen"
	}
	return 0, "Unknown"
}

// process writes actor.process, the process holding the socket;
// attribution leaves a field empty when it could not read it, and the
// field is then left out. The user is the process's effective one.
func (o *ocsfEncoder) process(j *jsonObj, p *event.Process) {
	j.object("process")
	j.int("pid", int64(p.PID))
	if p.Comm != "" {
		j.str("name", p.Comm)
	}
	if p.Exe != "" {
		// The File object requires name and type_id; /proc/PID/exe
		// points at a regular file (1).
		j.object("file")
		j.str("name", p.Exe[strings.LastIndexByte(p.Exe, '/')+1:])
		j.str("path", p.Exe)
		j.int("type_id", 1)
		j.finish()
	}
	if p.Cmdline != "" {
		j.str("cmd_line", p.Cmdline)
	}
	j.object("user")
	j.uintString("uid", uint64(p.UID))
	if p.User != "" {
		j.str("name", p.User)
	}
	j.finish()
	j.finish()
}

// netns writes the network namespace, for which OCSF has no attribute,
// under unmapped.
func (o *ocsfEncoder) netns(j *jsonObj, ev *event.Event) {
	if ev.Netns != 0 {
		j.uint("netns", ev.Netns)
		if ev.NetnsName != "" {
			j.str("netns_name", ev.NetnsName)
		}
	}
}

// traffic writes the closing counters from the local end's point of view:
// in is what the socket received, out what it sent.
func (o *ocsfEncoder) traffic(j *jsonObj, in *snapshot.TCPInfo) {
	j.object("traffic")
	if in.Len >= infoLenBytesRecv {
		j.uint("bytes_in", in.BytesReceived)
	}
	if in.Len >= infoLenBytesSent {
		j.uint("bytes_out", in.BytesSent)
		j.uint("bytes", in.BytesSent+in.BytesReceived)
	}
	if in.Len >= infoLenSegs {
		j.uint("packets_in", uint64(in.SegsIn))
		j.uint("packets_out", uint64(in.SegsOut))
		j.uint("packets", uint64(in.SegsIn)+uint64(in.SegsOut))
	}
	j.finish()
}

func (o *ocsfEncoder) endpoint(j *jsonObj, ap netip.AddrPort) {
	j.strBytes("ip", ap.Addr().WithZone("").AppendTo(o.scratch[:0]))
	j.uint("port", uint64(ap.Port()))
}
