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
	var className, categoryName, activityName, typeName string
	if ev.Kind == event.Gap {
		// A gap is about connlogd's own delivery, not network activity:
		// OCSF's Base Event (class 0) carries it, as activity 99 (Other)
		// with the source's own name. Its type_uid is then 99 too, whose
		// sibling takes the source's name as well (a validator flags
		// "Base Event: Other" there as a caption copied for 99).
		classUID, className, categoryUID, categoryName = 0, "Base Event", 0, "Uncategorized"
		activityID, activityName, typeName = ocsfActOther, "Gap", "Base Event: Gap"
	} else {
		classUID, className, categoryUID, categoryName = 4001, "Network Activity", 4, "Network Activity"
		activityID, activityName, typeName = ocsfActivity(ev)
	}
	j.int("activity_id", activityID)
	j.str("activity_name", activityName)
	j.int("category_uid", categoryUID)
	j.str("category_name", categoryName)
	j.int("class_uid", classUID)
	j.str("class_name", className)
	j.int("type_uid", classUID*100+activityID)
	j.str("type_name", typeName)
	if ev.Kind == event.Gap {
		j.int("severity_id", 3)
		j.str("severity", "Medium")
	} else {
		j.int("severity_id", 1)
		j.str("severity", "Informational")
	}
	t := eventTime(ev)
	j.int("time", t.UnixMilli())

	container := ev.Cgroup != nil && ev.Cgroup.ContainerID != ""
	j.object("metadata")
	j.str("version", ocsfVersion)
	if !ev.ID.IsZero() {
		j.strBytes("uid", ev.ID.Append(o.scratch[:0]))
	}
	// device and actor belong to the host profile, the endpoints'
	// container to the container profile: an event that uses them must
	// list them, or a validator rejects the attributes. A gap's Base
	// Event has neither.
	if ev.Kind != event.Gap {
		if container {
			j.strs("profiles", "host", "container")
		} else {
			j.strs("profiles", "host")
		}
	}
	j.object("product")
	j.str("name", "connlogd")
	j.str("vendor_name", "connlogd")
	j.str("version", o.version)
	j.finish()
	j.str("log_name", "connlogd")
	j.str("event_code", ev.Kind.String())
	j.finish()

	if ev.Kind == event.Gap {
		j.key("message")
		j.b = append(j.b, `"events may be missing: `...)
		j.b = appendJSONBody(j.b, ev.Reason)
		j.b = append(j.b, '"')
		j.object("unmapped")
		j.str("hostname", o.host)
		o.netns(&j, ev)
		j.str("reason", ev.Reason)
		if ev.Count != 0 {
			j.uint("count", ev.Count)
		}
		j.finish()
		j.finish()
		return append(j.b, '\n'), nil
	}

	j.object("device")
	j.str("hostname", o.host)
	j.int("type_id", 0) // unknown: connlogd cannot tell a server from a desktop
	j.finish()

	s := &ev.Socket
	f := flowOf(ev)
	// The container the socket was created in is the local end's.
	// Network Activity has no top-level container (the container profile
	// applies to endpoints and processes), and the process may be
	// unknown while the cgroup is not (short-lived connections).
	if f.hasClient {
		j.object("src_endpoint")
		o.endpoint(&j, f.client)
		if container && f.localIsClient {
			o.container(&j, ev.Cgroup)
		}
		j.finish()
	}
	j.object("dst_endpoint")
	o.endpoint(&j, f.server)
	if container && !f.localIsClient {
		o.container(&j, ev.Cgroup)
	}
	j.finish()

	j.object("connection_info")
	j.str("protocol_name", s.Proto.String())
	j.int("protocol_num", int64(s.Proto))
	j.int("protocol_ver_id", f.ipVersion())
	// direction_id is required: an undecided direction is 0, Unknown.
	dirID, dir := ocsfDirection(ev.Direction)
	j.int("direction_id", dirID)
	j.str("direction", dir)
	j.finish()

	if ev.Kind == event.Closed && ev.Failure.Failed() {
		j.int("status_id", 2)
		j.str("status", "Failure")
		if cause := ev.Failure.String(); cause != "" {
			j.str("status_detail", cause)
		}
	}
	if ev.Kind == event.Closed || ev.Kind == event.Updated {
		if !ev.FirstSeen.IsZero() {
			j.int("start_time", ev.FirstSeen.UnixMilli())
		}
		if ev.Kind == event.Closed {
			j.int("end_time", t.UnixMilli())
		}
		j.int("duration", ev.Duration().Milliseconds())
		if c, ok := f.countersOf(ev); ok {
			o.traffic(&j, &c)
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
	// OCSF 1.3.0 has no attribute for a Community ID (1.4.0 adds
	// connection_info.community_uid).
	if id, ok := appendCommunityID(o.scratch[:0], s.Proto, s.Src, s.Dst); ok {
		j.strBytes("community_id", id)
	}
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
	if (ev.Kind == event.Closed || ev.Kind == event.Updated) && s.Proto == snapshot.ProtoTCP && s.HasInfo {
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

// container writes the endpoint's container, the socket's creator's.
func (o *ocsfEncoder) container(j *jsonObj, c *event.Cgroup) {
	j.object("container")
	j.str("uid", c.ContainerID)
	j.finish()
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

// traffic writes the counters by side: out is what the source (the
// initiator) sent, in what the destination sent, as OCSF defines them.
func (o *ocsfEncoder) traffic(j *jsonObj, c *counters) {
	j.object("traffic")
	if c.hasDstBytes {
		j.uint("bytes_in", c.dstBytes)
	}
	if c.hasSrcBytes {
		j.uint("bytes_out", c.srcBytes)
	}
	if c.hasSrcBytes && c.hasDstBytes {
		j.uint("bytes", c.srcBytes+c.dstBytes)
	}
	if c.hasPackets {
		j.uint("packets_in", c.dstPackets)
		j.uint("packets_out", c.srcPackets)
		j.uint("packets", c.srcPackets+c.dstPackets)
	}
	j.finish()
}

func (o *ocsfEncoder) endpoint(j *jsonObj, ap netip.AddrPort) {
	j.strBytes("ip", ap.Addr().WithZone("").AppendTo(o.scratch[:0]))
	j.uint("port", uint64(ap.Port()))
}
