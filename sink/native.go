package sink

import (
	"net/netip"

	"go.uber.org/zap/zapcore"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// nativeEncoder is the native schema of docs/events.md: the line of a
// zap log entry whose time is the event's, whose message is its kind,
// and whose fields are the host's and the socket's.
type nativeEncoder struct {
	w      jsonWriter
	fields nativeFields
}

func newNativeEncoder(host string) *nativeEncoder {
	return &nativeEncoder{w: newJSONWriter(), fields: nativeFields{host: host}}
}

func (n *nativeEncoder) encode(b []byte, ev *event.Event) ([]byte, error) {
	n.fields.ev = ev
	b, err := n.w.writeObject(b, &n.fields)
	n.fields.ev = nil
	return b, err
}

// entry is the zap entry of an event: the kind is the message, and the
// level carries the syslog severity (gaps are warnings). The native line
// is written by nativeFields, which writes what zap would of it.
func entry(ev *event.Event) zapcore.Entry {
	lvl := zapcore.InfoLevel
	if ev.Kind == event.Gap {
		lvl = zapcore.WarnLevel
	}
	// zap omits a zero time; ts is promised on every line.
	return zapcore.Entry{Level: lvl, Time: eventTime(ev), Message: ev.Kind.String()}
}

// nativeFields writes an event's line, {"ts":…,"event":…,"host":…
// first, in schema order, straight into zap's encoder: one inline object
// rather than an entry and a zap.Field per member, which would be built,
// then switched on by type, for the same calls of the same encoder (the
// bytes are the same). It is reused for every event of a Tee, so writing
// allocates nothing: times, addresses and ids are formatted into scratch
// space, which the encoder copies.
type nativeFields struct {
	ev      *event.Event
	host    string
	scratch [64]byte // longer than any IPv6 text without zone (45), a Community ID (30), an event id (32) or a ts (30)
	flow    flowID
}

func (f *nativeFields) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	ev := f.ev
	// ts is promised on every line. The encoder writes it with
	// appendTS (jsonenc.go), straight into the line.
	enc.AddTime("ts", eventTime(ev))
	enc.AddString("event", ev.Kind.String())
	enc.AddString("host", f.host)
	if ev.Netns != 0 {
		enc.AddUint64("netns", ev.Netns)
		if ev.NetnsName != "" {
			enc.AddString("netns_name", ev.NetnsName)
		}
	}
	if ev.Kind == event.Gap {
		if ev.Reason != "" {
			enc.AddString("reason", ev.Reason)
		}
		if ev.Count != 0 {
			enc.AddUint64("count", ev.Count)
		}
		f.addID(enc)
		return nil
	}
	s := &ev.Socket
	enc.AddString("proto", s.Proto.String())
	enc.AddString("family", s.Family.String())
	enc.AddString("state", s.State.String())
	if ev.Kind == event.StateChanged {
		enc.AddString("prev_state", ev.PrevState.String())
	}
	enc.AddByteString("src_ip", s.Src.Addr().WithZone("").AppendTo(f.scratch[:0]))
	enc.AddUint16("src_port", s.Src.Port())
	enc.AddByteString("dst_ip", s.Dst.Addr().WithZone("").AppendTo(f.scratch[:0]))
	enc.AddUint16("dst_port", s.Dst.Port())
	if id, ok := f.flow.get(s.Proto, s.Src, s.Dst); ok {
		enc.AddByteString("community_id", id)
	}
	if s.IfIndex != 0 {
		enc.AddUint32("ifindex", s.IfIndex)
	}
	enc.AddUint64("cookie", s.Cookie)
	enc.AddUint32("uid", s.UID)
	enc.AddUint32("inode", s.Inode)
	if s.CgroupID != 0 {
		enc.AddUint64("cgroup_id", s.CgroupID)
	}
	if ev.Direction != event.DirectionUnknown {
		enc.AddString("direction", ev.Direction.String())
	}
	if p := ev.Process; p != nil {
		addProcess(enc, p)
	}
	if c := ev.Cgroup; c != nil {
		enc.AddString("cgroup", c.Path)
		if c.SystemdUnit != "" {
			enc.AddString("systemd_unit", c.SystemdUnit)
		}
	}
	if id := ev.ContainerID(); id != "" {
		enc.AddString("container_id", id)
	}
	if c := ev.Container; c != nil {
		addContainer(enc, c)
	}
	if ev.Initial && ev.Kind == event.Appeared {
		enc.AddBool("initial", true)
	}
	if ev.Late {
		enc.AddBool("late", true)
	}
	if ev.ShortLived {
		enc.AddBool("short_lived", true)
	}
	if ev.Kind == event.Closed && ev.Reason != "" {
		enc.AddString("reason", ev.Reason)
	}
	if ev.Kind == event.Closed && ev.Failure.Failed() {
		enc.AddString("outcome", "failed")
		if cause := ev.Failure.String(); cause != "" {
			enc.AddString("failure", cause)
		}
	}
	if ev.Kind == event.Closed || ev.Kind == event.Updated {
		enc.AddFloat64("duration", ev.Duration().Seconds())
		if s.Proto == snapshot.ProtoTCP && s.HasInfo {
			addInfo(enc, &s.Info)
		}
	}
	f.addID(enc)
	return nil
}

// addID writes event_id, last on the line: added after the other
// fields, it does not move them.
func (f *nativeFields) addID(enc zapcore.ObjectEncoder) {
	if !f.ev.ID.IsZero() {
		enc.AddByteString("event_id", f.ev.ID.Append(f.scratch[:0]))
	}
}

// flowID keeps the last Community ID computed, for the flow it was
// computed for: a short-lived connection's events come one after the
// other (appeared and closed of its client socket, then of its server
// socket, whose ends are the client's swapped: the ID orders the ends, so
// it is the same), and the hash is a good part of a line's cost.
type flowID struct {
	proto    snapshot.Proto
	src, dst netip.AddrPort
	set, ok  bool
	id       []byte // in buf, which holds a Community ID v1 (30 bytes)
	buf      [32]byte
}

// get returns the Community ID of the flow, computing it unless it is
// the last one asked for; ok is false when the flow has none. The bytes
// are valid until the next call.
func (c *flowID) get(proto snapshot.Proto, src, dst netip.AddrPort) ([]byte, bool) {
	if c.set && proto == c.proto && src == c.dst && dst == c.src && c.ok && hasCommunityID(src, dst) {
		return c.id, true
	}
	if !c.set || proto != c.proto || src != c.src || dst != c.dst {
		c.id, c.ok = appendCommunityID(c.buf[:0], proto, src, dst)
		c.proto, c.src, c.dst, c.set = proto, src, dst, true
	}
	return c.id, c.ok
}

// addProcess writes the owning process; attribution leaves a field
// empty when it could not read it.
func addProcess(enc zapcore.ObjectEncoder, p *event.Process) {
	enc.AddInt64("pid", int64(p.PID))
	for _, kv := range [...]struct{ k, v string }{{"comm", p.Comm}, {"exe", p.Exe}, {"user", p.User}, {"cmdline", p.Cmdline}} {
		if kv.v != "" {
			enc.AddString(kv.k, kv.v)
		}
	}
}

func addInfo(enc zapcore.ObjectEncoder, in *snapshot.TCPInfo) {
	if in.Len >= infoLenBytesSent {
		enc.AddUint64("bytes_sent", in.BytesSent)
	}
	if in.Len >= infoLenBytesRecv {
		enc.AddUint64("bytes_received", in.BytesReceived)
		enc.AddUint64("bytes_acked", in.BytesAcked)
	}
	enc.AddUint32("retransmits", in.TotalRetrans)
	enc.AddUint32("rtt_us", in.RTT)
	if in.Len >= infoLenSegs {
		enc.AddUint32("segs_out", in.SegsOut)
		enc.AddUint32("segs_in", in.SegsIn)
	}
}

// addContainer writes what the container runtime said of the socket's
// container, each field when it has a value.
func addContainer(enc zapcore.ObjectEncoder, c *event.Container) {
	for _, kv := range [...]struct{ k, v string }{
		{"container_name", c.Name},
		{"container_image", c.Image},
		{"container_image_id", c.ImageID},
		{"pod_name", c.PodName},
		{"pod_namespace", c.PodNamespace},
		{"pod_uid", c.PodUID},
	} {
		if kv.v != "" {
			enc.AddString(kv.k, kv.v)
		}
	}
}
