package sink

import (
	"net/netip"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// nativeEncoder is the native schema of docs/events.md: a zap log line
// whose message is the event kind and whose fields are the socket's.
type nativeEncoder struct {
	w      jsonWriter
	fields fieldBuilder
}

func newNativeEncoder(host string) *nativeEncoder {
	return &nativeEncoder{w: newNativeWriter(host), fields: fieldBuilder{fields: make([]zapcore.Field, 0, 32)}}
}

func (n *nativeEncoder) encode(b []byte, ev *event.Event) ([]byte, error) {
	return n.w.write(b, entry(ev), n.fields.build(ev))
}

// entry is the zap entry of an event: the kind is the message, and the
// level carries the syslog severity (gaps are warnings).
func entry(ev *event.Event) zapcore.Entry {
	lvl := zapcore.InfoLevel
	if ev.Kind == event.Gap {
		lvl = zapcore.WarnLevel
	}
	// zap omits a zero time; ts is promised on every line.
	return zapcore.Entry{Level: lvl, Time: eventTime(ev), Message: ev.Kind.String()}
}

// fieldBuilder turns events into zap fields. It is reused for every event
// of a Tee, so building the fields allocates nothing.
type fieldBuilder struct {
	fields []zapcore.Field
	ends   endpoints
	id     idField
}

// build returns the fields of ev after ts, event and host, in schema
// order. The result is valid until the next call.
func (b *fieldBuilder) build(ev *event.Event) []zapcore.Field {
	f := b.fields[:0]
	if ev.Netns != 0 {
		f = append(f, zap.Uint64("netns", ev.Netns))
		if ev.NetnsName != "" {
			f = append(f, zap.String("netns_name", ev.NetnsName))
		}
	}
	if ev.Kind == event.Gap {
		if ev.Reason != "" {
			f = append(f, zap.String("reason", ev.Reason))
		}
		if ev.Count != 0 {
			f = append(f, zap.Uint64("count", ev.Count))
		}
		f = b.appendID(f, ev)
		b.fields = f
		return f
	}
	s := &ev.Socket
	f = append(f,
		zap.String("proto", s.Proto.String()),
		zap.String("family", s.Family.String()),
		zap.String("state", s.State.String()),
	)
	if ev.Kind == event.StateChanged {
		f = append(f, zap.String("prev_state", ev.PrevState.String()))
	}
	b.ends.src, b.ends.dst, b.ends.proto = s.Src, s.Dst, s.Proto
	f = append(f, zap.Inline(&b.ends))
	if s.IfIndex != 0 {
		f = append(f, zap.Uint32("ifindex", s.IfIndex))
	}
	f = append(f,
		zap.Uint64("cookie", s.Cookie),
		zap.Uint32("uid", s.UID),
		zap.Uint32("inode", s.Inode),
	)
	if s.CgroupID != 0 {
		f = append(f, zap.Uint64("cgroup_id", s.CgroupID))
	}
	if ev.Direction != event.DirectionUnknown {
		f = append(f, zap.String("direction", ev.Direction.String()))
	}
	if ev.Process != nil {
		f = appendProcess(f, ev.Process)
	}
	if c := ev.Cgroup; c != nil {
		f = append(f, zap.String("cgroup", c.Path))
		if c.SystemdUnit != "" {
			f = append(f, zap.String("systemd_unit", c.SystemdUnit))
		}
	}
	if id := ev.ContainerID(); id != "" {
		f = append(f, zap.String("container_id", id))
	}
	if c := ev.Container; c != nil {
		f = appendContainer(f, c)
	}
	if ev.Initial && ev.Kind == event.Appeared {
		f = append(f, zap.Bool("initial", true))
	}
	if ev.Late {
		f = append(f, zap.Bool("late", true))
	}
	if ev.ShortLived {
		f = append(f, zap.Bool("short_lived", true))
	}
	if ev.Kind == event.Closed && ev.Reason != "" {
		f = append(f, zap.String("reason", ev.Reason))
	}
	if ev.Kind == event.Closed && ev.Failure.Failed() {
		f = append(f, zap.String("outcome", "failed"))
		if cause := ev.Failure.String(); cause != "" {
			f = append(f, zap.String("failure", cause))
		}
	}
	if ev.Kind == event.Closed || ev.Kind == event.Updated {
		f = append(f, zap.Float64("duration", ev.Duration().Seconds()))
		if s.Proto == snapshot.ProtoTCP && s.HasInfo {
			f = appendInfo(f, &s.Info)
		}
	}
	f = b.appendID(f, ev)
	b.fields = f
	return f
}

// appendID writes event_id, last on the line: added after the other
// fields, it does not move them.
func (b *fieldBuilder) appendID(f []zapcore.Field, ev *event.Event) []zapcore.Field {
	if ev.ID.IsZero() {
		return f
	}
	b.id.id = ev.ID
	return append(f, zap.Inline(&b.id))
}

// idField writes event_id. Like endpoints, it formats into scratch space
// so that the id costs no allocation.
type idField struct {
	id      event.ID
	scratch [32]byte
}

func (f *idField) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddByteString("event_id", f.id.Append(f.scratch[:0]))
	return nil
}

// appendProcess writes the owning process; attribution leaves a field
// empty when it could not read it.
func appendProcess(f []zapcore.Field, p *event.Process) []zapcore.Field {
	f = append(f, zap.Int("pid", p.PID))
	for _, kv := range [...]struct{ k, v string }{{"comm", p.Comm}, {"exe", p.Exe}, {"user", p.User}, {"cmdline", p.Cmdline}} {
		if kv.v != "" {
			f = append(f, zap.String(kv.k, kv.v))
		}
	}
	return f
}

func appendInfo(f []zapcore.Field, in *snapshot.TCPInfo) []zapcore.Field {
	if in.Len >= infoLenBytesSent {
		f = append(f, zap.Uint64("bytes_sent", in.BytesSent))
	}
	if in.Len >= infoLenBytesRecv {
		f = append(f,
			zap.Uint64("bytes_received", in.BytesReceived),
			zap.Uint64("bytes_acked", in.BytesAcked),
		)
	}
	f = append(f,
		zap.Uint32("retransmits", in.TotalRetrans),
		zap.Uint32("rtt_us", in.RTT),
	)
	if in.Len >= infoLenSegs {
		f = append(f,
			zap.Uint32("segs_out", in.SegsOut),
			zap.Uint32("segs_in", in.SegsIn),
		)
	}
	return f
}

// endpoints writes src_ip, src_port, dst_ip, dst_port inline. It exists
// because zap.String(addr.String()) would allocate two strings per event:
// here the addresses are formatted into scratch space and handed to the
// encoder as bytes, which it copies.
// It also writes community_id, the flow's Community ID, when the socket
// has a remote end.
type endpoints struct {
	src, dst netip.AddrPort
	proto    snapshot.Proto
	scratch  [64]byte // longer than any IPv6 text without zone (45) and a Community ID (30)
}

func (e *endpoints) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddByteString("src_ip", e.src.Addr().WithZone("").AppendTo(e.scratch[:0]))
	enc.AddUint16("src_port", e.src.Port())
	enc.AddByteString("dst_ip", e.dst.Addr().WithZone("").AppendTo(e.scratch[:0]))
	enc.AddUint16("dst_port", e.dst.Port())
	if id, ok := appendCommunityID(e.scratch[:0], e.proto, e.src, e.dst); ok {
		enc.AddByteString("community_id", id)
	}
	return nil
}

// appendContainer adds what the container runtime said of the socket's
// container, each field when it has a value.
func appendContainer(f []zapcore.Field, c *event.Container) []zapcore.Field {
	for _, kv := range [...]struct{ k, v string }{
		{"container_name", c.Name},
		{"container_image", c.Image},
		{"container_image_id", c.ImageID},
		{"pod_name", c.PodName},
		{"pod_namespace", c.PodNamespace},
		{"pod_uid", c.PodUID},
	} {
		if kv.v != "" {
			f = append(f, zap.String(kv.k, kv.v))
		}
	}
	return f
}
