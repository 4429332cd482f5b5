package sink

import (
	"strings"

	"go.uber.org/zap/zapcore"

	"github.com/connlogd/connlogd/event"
)

// ocsfVersion is the OCSF schema version the mapping follows
// (docs/ocsf.md).
const ocsfVersion = "1.3.0"

// ocsfEncoder writes events as OCSF Network Activity (socket events) or
// Base Event (gaps); docs/ocsf.md is the mapping. Each OCSF object
// (metadata, src_endpoint, connection_info, actor…) is one type below
// with one MarshalLogObject: the place to edit its attributes. The types
// are all ocsfDoc under other names, so that handing one to zap is a
// pointer conversion, not an allocation.
type ocsfEncoder struct {
	w   jsonWriter
	doc ocsfDoc
}

func newOCSFEncoder(host, version string) *ocsfEncoder {
	return &ocsfEncoder{w: newJSONWriter(), doc: ocsfDoc{host: host, version: version}}
}

func (o *ocsfEncoder) encode(b []byte, ev *event.Event) ([]byte, error) {
	o.doc.ev = ev
	if socketKind(ev) {
		o.doc.f = flowOf(ev)
		o.doc.c, o.doc.hasCounters = o.doc.f.countersOf(ev)
	}
	b, err := o.w.writeObject(b, &o.doc)
	o.doc.ev = nil
	return b, err
}

// ocsfClass is an event's class and activity, with the names OCSF pairs
// with each id: type_name is the caption of type_uid (class_uid*100 +
// activity_id) in the schema, which a validator compares.
type ocsfClass struct {
	classUID, categoryUID, activityID int64
	className, categoryName           string
	activityName, typeName            string
}

func networkActivity(activityID int64, activityName, typeName string) ocsfClass {
	return ocsfClass{classUID: 4001, className: "Network Activity", categoryUID: 4, categoryName: "Network Activity",
		activityID: activityID, activityName: activityName, typeName: typeName}
}

var (
	// A gap is about connlogd's own delivery, not network activity:
	// OCSF's Base Event (class 0) carries it, as activity 99 (Other)
	// with the source's own name. Its type_uid is then 99 too, whose
	// sibling takes the source's name as well (a validator flags "Base
	// Event: Other" there as a caption copied for 99).
	ocsfGap = ocsfClass{classUID: 0, className: "Base Event", categoryUID: 0, categoryName: "Uncategorized",
		activityID: 99, activityName: "Gap", typeName: "Base Event: Gap"}
	ocsfOpened  = networkActivity(1, "Open", "Network Activity: Open")
	ocsfClosed  = networkActivity(2, "Close", "Network Activity: Close")
	ocsfFailed  = networkActivity(4, "Fail", "Network Activity: Fail")
	ocsfRefused = networkActivity(5, "Refuse", "Network Activity: Refuse")
	// updated, and a -once line of a connection: a report on its traffic.
	ocsfTrafficReport = networkActivity(6, "Traffic", "Network Activity: Traffic")
	ocsfListen        = networkActivity(7, "Listen", "Network Activity: Listen")
	// OCSF has no activity for a TCP state transition: 99 (Other) with
	// the source's own name, while type_name stays the caption of 400199.
	ocsfChanged = networkActivity(99, "State Changed", "Network Activity: Other")
)

func ocsfClassOf(ev *event.Event) *ocsfClass {
	listen := ev.Direction == event.DirectionListen
	switch ev.Kind {
	case event.Gap:
		return &ocsfGap
	case event.Appeared:
		if listen {
			return &ocsfListen
		}
		return &ocsfOpened
	case event.Closed:
		switch {
		case ev.Failure == event.FailedRefused:
			return &ocsfRefused
		case ev.Failure.Failed():
			return &ocsfFailed
		}
		return &ocsfClosed
	case event.StateChanged:
		return &ocsfChanged
	case event.Snapshot:
		if listen {
			return &ocsfListen
		}
	}
	return &ocsfTrafficReport
}

// ocsfDoc is the document of one event: its top-level attributes, in
// order.
type ocsfDoc struct {
	ev            *event.Event
	host, version string
	scratch       [64]byte
	message       []byte // a gap's message, reused
	// The socket as a connection (flow.go): initiator first.
	f           flow
	c           counters
	hasCounters bool
}

func (d *ocsfDoc) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	ev := d.ev
	c := ocsfClassOf(ev)
	enc.AddInt64("activity_id", c.activityID)
	enc.AddString("activity_name", c.activityName)
	enc.AddInt64("category_uid", c.categoryUID)
	enc.AddString("category_name", c.categoryName)
	enc.AddInt64("class_uid", c.classUID)
	enc.AddString("class_name", c.className)
	enc.AddInt64("type_uid", c.classUID*100+c.activityID)
	enc.AddString("type_name", c.typeName)
	if ev.Kind == event.Gap {
		enc.AddInt64("severity_id", 3)
		enc.AddString("severity", "Medium")
	} else {
		enc.AddInt64("severity_id", 1)
		enc.AddString("severity", "Informational")
	}
	t := eventTime(ev)
	enc.AddInt64("time", t.UnixMilli())
	enc.AddObject("metadata", (*ocsfMetadata)(d))

	if ev.Kind == event.Gap {
		d.message = append(append(d.message[:0], "events may be missing: "...), ev.Reason...)
		enc.AddByteString("message", d.message)
		enc.AddObject("unmapped", (*ocsfGapUnmapped)(d))
		return nil
	}

	// device (and actor) belong to the host profile: a Base Event has
	// neither, and its host is unmapped.hostname.
	enc.AddObject("device", (*ocsfDevice)(d))
	// A socket without a peer has no src_endpoint: its own end is the
	// dst_endpoint connections are made to.
	if d.f.hasClient {
		enc.AddObject("src_endpoint", (*ocsfSrcEndpoint)(d))
	}
	enc.AddObject("dst_endpoint", (*ocsfDstEndpoint)(d))
	enc.AddObject("connection_info", (*ocsfConnectionInfo)(d))
	if ev.Kind == event.Closed && ev.Failure.Failed() {
		enc.AddInt64("status_id", 2)
		enc.AddString("status", "Failure")
		if cause := ev.Failure.String(); cause != "" {
			enc.AddString("status_detail", cause)
		}
	}
	if ev.Kind == event.Closed || ev.Kind == event.Updated {
		if !ev.FirstSeen.IsZero() {
			enc.AddInt64("start_time", ev.FirstSeen.UnixMilli())
		}
		if ev.Kind == event.Closed {
			enc.AddInt64("end_time", t.UnixMilli())
		}
		enc.AddInt64("duration", ev.Duration().Milliseconds())
		if d.hasCounters {
			enc.AddObject("traffic", (*ocsfTraffic)(d))
		}
	}
	// The kernel sends no owner in destroy notifications: uid 0 there
	// means unknown, not root.
	if !ev.ShortLived || ev.Process != nil {
		enc.AddObject("actor", (*ocsfActor)(d))
	}
	enc.AddObject("unmapped", (*ocsfUnmapped)(d))
	return nil
}

type ocsfMetadata ocsfDoc

// OCSF profiles: device and actor belong to host, an endpoint's
// container to container. A validator accepts them only when
// metadata.profiles lists their profile.
var (
	ocsfProfilesHost          = strArray{"host"}
	ocsfProfilesHostContainer = strArray{"host", "container"}
)

func (d *ocsfMetadata) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("version", ocsfVersion)
	if !d.ev.ID.IsZero() {
		enc.AddByteString("uid", d.ev.ID.Append(d.scratch[:0]))
	}
	if socketKind(d.ev) {
		if d.ev.ContainerID() != "" {
			enc.AddArray("profiles", &ocsfProfilesHostContainer)
		} else {
			enc.AddArray("profiles", &ocsfProfilesHost)
		}
	}
	enc.AddObject("product", (*ocsfProduct)(d))
	enc.AddString("log_name", "connlogd")
	enc.AddString("event_code", d.ev.Kind.String())
	return nil
}

type ocsfProduct ocsfDoc

func (d *ocsfProduct) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("name", "connlogd")
	enc.AddString("vendor_name", "connlogd")
	enc.AddString("version", d.version)
	return nil
}

type ocsfDevice ocsfDoc

func (d *ocsfDevice) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("hostname", d.host)
	enc.AddInt64("type_id", 0) // unknown: connlogd cannot tell a server from a desktop
	return nil
}

// ocsfGapUnmapped is a gap's unmapped object.
type ocsfGapUnmapped ocsfDoc

func (d *ocsfGapUnmapped) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	ev := d.ev
	enc.AddString("hostname", d.host)
	addNetns(enc, ev)
	enc.AddString("reason", ev.Reason)
	if ev.Count != 0 {
		enc.AddUint64("count", ev.Count)
	}
	return nil
}

// ocsfSrcEndpoint is the initiator (client).
type ocsfSrcEndpoint ocsfDoc

func (d *ocsfSrcEndpoint) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	addEndpoint(enc, d.f.client, &d.scratch)
	if d.f.localIsClient {
		(*ocsfDoc)(d).addContainer(enc)
	}
	return nil
}

// addContainer writes the container the socket was created in, on the
// local end's endpoint. Network Activity has no top-level container (the
// container profile applies to endpoints and processes), and the process
// may be unknown while the cgroup is not (short-lived connections).
func (d *ocsfDoc) addContainer(enc zapcore.ObjectEncoder) {
	if d.ev.ContainerID() != "" {
		enc.AddObject("container", (*ocsfContainer)(d))
	}
}

type ocsfContainer ocsfDoc

func (d *ocsfContainer) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("uid", d.ev.ContainerID())
	c := d.ev.Container
	if c == nil {
		return nil
	}
	if c.Name != "" {
		enc.AddString("name", c.Name)
	}
	// image.uid is required in OCSF's image object: without the runtime's
	// image id, no image object.
	if c.ImageID != "" {
		enc.AddObject("image", (*ocsfImage)(d))
	}
	// OCSF 1.3.0's container has the pod's uid (a UUID) and the
	// orchestrator's name, not the pod's name or namespace: those stay
	// in the native and ECS schemas.
	if isUUID(c.PodUID) {
		enc.AddString("pod_uuid", c.PodUID)
	}
	if c.PodName != "" || c.PodNamespace != "" || c.PodUID != "" {
		enc.AddString("orchestrator", "Kubernetes")
	}
	return nil
}

type ocsfImage ocsfDoc

func (d *ocsfImage) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	c := d.ev.Container
	enc.AddString("uid", c.ImageID)
	name, tag, _ := splitImageRef(c.Image)
	if name != "" {
		enc.AddString("name", name)
	}
	if tag != "" {
		enc.AddString("tag", tag)
	}
	return nil
}

// isUUID reports whether s has the 8-4-4-4-12 hex form of OCSF's uuid_t.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F'):
			return false
		}
	}
	return true
}

// ocsfDstEndpoint is the responder (server), or a peerless socket's own
// end.
type ocsfDstEndpoint ocsfDoc

func (d *ocsfDstEndpoint) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	addEndpoint(enc, d.f.server, &d.scratch)
	if !d.f.localIsClient {
		(*ocsfDoc)(d).addContainer(enc)
	}
	return nil
}

type ocsfConnectionInfo ocsfDoc

func (d *ocsfConnectionInfo) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	s := &d.ev.Socket
	enc.AddString("protocol_name", s.Proto.String())
	enc.AddInt64("protocol_num", int64(s.Proto))
	enc.AddInt64("protocol_ver_id", d.f.ipVersion()) // on the wire
	// direction_id is required: an undecided direction is 0, Unknown.
	dirID, dir := ocsfDirection(d.ev.Direction)
	enc.AddInt64("direction_id", dirID)
	enc.AddString("direction", dir)
	return nil
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

// ocsfTraffic is the counters by side, as OCSF defines them: out is what
// the source (the initiator) sent, in what the destination sent.
type ocsfTraffic ocsfDoc

func (d *ocsfTraffic) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	c := &d.c
	if c.hasDstBytes {
		enc.AddUint64("bytes_in", c.dstBytes)
	}
	if c.hasSrcBytes {
		enc.AddUint64("bytes_out", c.srcBytes)
	}
	if c.hasSrcBytes && c.hasDstBytes {
		enc.AddUint64("bytes", c.srcBytes+c.dstBytes)
	}
	if c.hasPackets {
		enc.AddUint64("packets_in", c.dstPackets)
		enc.AddUint64("packets_out", c.srcPackets)
		enc.AddUint64("packets", c.srcPackets+c.dstPackets)
	}
	return nil
}

// ocsfActor is the socket's owner and the process holding it.
type ocsfActor ocsfDoc

func (d *ocsfActor) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	if !d.ev.ShortLived {
		enc.AddObject("user", (*ocsfUser)(d))
	}
	if d.ev.Process != nil {
		enc.AddObject("process", (*ocsfProcess)(d))
	}
	return nil
}

// ocsfUser is the socket's owner.
type ocsfUser ocsfDoc

func (d *ocsfUser) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	addUintString(enc, "uid", uint64(d.ev.Socket.UID), &d.scratch)
	return nil
}

// ocsfProcess is actor.process, the process holding the socket;
// attribution leaves a field empty when it could not read it, and the
// field is then left out.
type ocsfProcess ocsfDoc

func (d *ocsfProcess) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	p := d.ev.Process
	enc.AddInt64("pid", int64(p.PID))
	if p.Comm != "" {
		enc.AddString("name", p.Comm)
	}
	if p.Exe != "" {
		enc.AddObject("file", (*ocsfProcessFile)(d))
	}
	if p.Cmdline != "" {
		enc.AddString("cmd_line", p.Cmdline)
	}
	enc.AddObject("user", (*ocsfProcessUser)(d))
	return nil
}

// ocsfProcessFile is the process's executable. The File object requires
// name and type_id; /proc/PID/exe points at a regular file (1).
type ocsfProcessFile ocsfDoc

func (d *ocsfProcessFile) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	exe := d.ev.Process.Exe
	enc.AddString("name", exe[strings.LastIndexByte(exe, '/')+1:])
	enc.AddString("path", exe)
	enc.AddInt64("type_id", 1)
	return nil
}

// ocsfProcessUser is the process's effective user.
type ocsfProcessUser ocsfDoc

func (d *ocsfProcessUser) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	p := d.ev.Process
	addUintString(enc, "uid", uint64(p.UID), &d.scratch)
	if p.User != "" {
		enc.AddString("name", p.User)
	}
	return nil
}

// ocsfUnmapped holds what OCSF has no attribute for.
type ocsfUnmapped ocsfDoc

func (d *ocsfUnmapped) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	ev := d.ev
	s := &ev.Socket
	addNetns(enc, ev)
	// OCSF 1.3.0 has no attribute for a Community ID
	// (connection_info.community_uid is not in it).
	if id, ok := appendCommunityID(d.scratch[:0], s.Proto, s.Src, s.Dst); ok {
		enc.AddByteString("community_id", id)
	}
	enc.AddString("state", s.State.String())
	if ev.Kind == event.StateChanged {
		enc.AddString("prev_state", ev.PrevState.String())
	}
	if s.IfIndex != 0 {
		enc.AddUint64("ifindex", uint64(s.IfIndex))
	}
	addCookie(enc, s.Cookie, &d.scratch)
	enc.AddUint64("inode", uint64(s.Inode))
	if s.CgroupID != 0 {
		enc.AddUint64("cgroup_id", s.CgroupID)
	}
	addCgroup(enc, ev.Cgroup)
	addFlags(enc, ev)
	if ev.Kind == event.Closed && ev.Reason != "" {
		enc.AddString("reason", ev.Reason)
	}
	if in := trafficInfo(ev); in != nil {
		addInfoRest(enc, in)
	}
	return nil
}
