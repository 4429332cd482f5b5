package sink

import (
	"strings"

	"go.uber.org/zap/zapcore"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// ecsVersion is the Elastic Common Schema version the mapping follows
// (docs/ecs.md).
const ecsVersion = "8.11.0"

// ecsEncoder writes events in the Elastic Common Schema; docs/ecs.md is
// the mapping. Each ECS object (event, source, network, process…) is one
// type below with one MarshalLogObject: the place to edit its fields.
// The types are all ecsDoc under other names, so that handing one to zap
// is a pointer conversion, not an allocation.
type ecsEncoder struct {
	w   jsonWriter
	doc ecsDoc
}

func newECSEncoder(host, version string) *ecsEncoder {
	return &ecsEncoder{w: newJSONWriter(), doc: ecsDoc{host: host, version: version}}
}

func (e *ecsEncoder) encode(b []byte, ev *event.Event) ([]byte, error) {
	e.doc.ev = ev
	if socketKind(ev) {
		e.doc.f = flowOf(ev)
		e.doc.c, e.doc.hasCounters = e.doc.f.countersOf(ev)
	}
	b, err := e.w.writeObject(b, &e.doc)
	e.doc.ev = nil
	return b, err
}

// ecsDoc is the document of one event: its top-level fields, in order.
type ecsDoc struct {
	ev            *event.Event
	host, version string
	scratch       [64]byte
	// The socket as a connection (flow.go): initiator first.
	f           flow
	c           counters
	hasCounters bool
}

func (d *ecsDoc) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	ev := d.ev
	enc.AddTime("@timestamp", eventTime(ev))
	enc.AddObject("ecs", ecsECS{})
	enc.AddObject("agent", (*ecsAgent)(d))
	enc.AddObject("log", (*ecsLog)(d))
	enc.AddObject("event", (*ecsEvent)(d))
	enc.AddObject("host", (*ecsHost)(d))
	if socketKind(ev) {
		// A socket without a peer has no source: its own end is the
		// destination connections are made to.
		if d.f.hasClient {
			enc.AddObject("source", (*ecsSource)(d))
		}
		enc.AddObject("destination", (*ecsDestination)(d))
		enc.AddObject("network", (*ecsNetwork)(d))
		// The kernel sends no owner in destroy notifications: uid 0
		// there means unknown, not root.
		if !ev.ShortLived {
			enc.AddObject("user", (*ecsUser)(d))
		}
		if ev.Process != nil {
			enc.AddObject("process", (*ecsProcess)(d))
		}
		if ev.ContainerID() != "" {
			enc.AddObject("container", (*ecsContainer)(d))
		}
		if c := ev.Container; c != nil && (c.PodName != "" || c.PodNamespace != "" || c.PodUID != "") {
			enc.AddObject("orchestrator", (*ecsOrchestrator)(d))
		}
	}
	enc.AddObject("connlogd", (*ecsConnlogd)(d))
	return nil
}

// ecsECS is the ecs object: the schema version.
type ecsECS struct{}

func (ecsECS) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("version", ecsVersion)
	return nil
}

type ecsAgent ecsDoc

func (d *ecsAgent) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("type", "connlogd")
	enc.AddString("version", d.version)
	return nil
}

type ecsLog ecsDoc

func (d *ecsLog) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	if d.ev.Kind == event.Gap {
		enc.AddString("level", "warning")
	} else {
		enc.AddString("level", "info")
	}
	return nil
}

// event.category: every event is network (event.type values: flow.go).
var ecsCategoryNetwork = strArray{"network"}

type ecsEvent ecsDoc

func (d *ecsEvent) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	ev := d.ev
	if !ev.ID.IsZero() {
		enc.AddByteString("id", ev.ID.Append(d.scratch[:0]))
	}
	enc.AddString("kind", "event")
	enc.AddArray("category", &ecsCategoryNetwork)
	if socketKind(ev) {
		enc.AddArray("type", ecsTypes(ev, &d.f))
	} else {
		enc.AddArray("type", &ecsInfo)
	}
	if ev.Kind == event.Closed && ev.Failure.Failed() {
		enc.AddString("outcome", "failure")
	}
	enc.AddString("action", ev.Kind.String())
	enc.AddString("module", "connlogd")
	enc.AddString("dataset", "connlogd.events")
	if ev.Reason != "" && (ev.Kind == event.Closed || ev.Kind == event.Gap) {
		enc.AddString("reason", ev.Reason)
	}
	if ev.Kind == event.Closed || ev.Kind == event.Updated {
		enc.AddInt64("duration", int64(ev.Duration())) // nanoseconds, as ECS wants
		if !ev.FirstSeen.IsZero() {
			enc.AddTime("start", ev.FirstSeen)
		}
		if ev.Kind == event.Closed {
			enc.AddTime("end", eventTime(ev))
		}
	}
	return nil
}

type ecsHost ecsDoc

func (d *ecsHost) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("hostname", d.host)
	enc.AddString("name", d.host)
	return nil
}

// ecsSource is the initiator, with what it sent (on closed and updated
// TCP events).
type ecsSource ecsDoc

func (d *ecsSource) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	addEndpoint(enc, d.f.client, &d.scratch)
	if d.hasCounters {
		if d.c.hasSrcBytes {
			enc.AddUint64("bytes", d.c.srcBytes)
		}
		if d.c.hasPackets {
			enc.AddUint64("packets", d.c.srcPackets)
		}
	}
	return nil
}

// ecsDestination is the responder, or a peerless socket's own end, with
// what it sent.
type ecsDestination ecsDoc

func (d *ecsDestination) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	addEndpoint(enc, d.f.server, &d.scratch)
	if d.hasCounters {
		if d.c.hasDstBytes {
			enc.AddUint64("bytes", d.c.dstBytes)
		}
		if d.c.hasPackets {
			enc.AddUint64("packets", d.c.dstPackets)
		}
	}
	return nil
}

type ecsNetwork ecsDoc

func (d *ecsNetwork) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	s := &d.ev.Socket
	enc.AddString("transport", s.Proto.String())
	enc.AddString("type", d.f.networkType())
	enc.AddString("iana_number", ianaNumber(s.Proto))
	if dir := ecsDirection(d.ev.Direction); dir != "" {
		enc.AddString("direction", dir)
	}
	if id, ok := appendCommunityID(d.scratch[:0], s.Proto, s.Src, s.Dst); ok {
		enc.AddByteString("community_id", id)
	}
	if d.hasCounters {
		if d.c.hasSrcBytes && d.c.hasDstBytes {
			enc.AddUint64("bytes", d.c.srcBytes+d.c.dstBytes)
		}
		if d.c.hasPackets {
			enc.AddUint64("packets", d.c.srcPackets+d.c.dstPackets)
		}
	}
	return nil
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

// ecsUser is the socket's owner.
type ecsUser ecsDoc

func (d *ecsUser) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	addUintString(enc, "id", uint64(d.ev.Socket.UID), &d.scratch)
	return nil
}

// ecsProcess is the owning process; attribution leaves a field empty
// when it could not read it, and the field is then left out.
type ecsProcess ecsDoc

func (d *ecsProcess) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	p := d.ev.Process
	enc.AddInt64("pid", int64(p.PID))
	if p.Comm != "" {
		enc.AddString("name", p.Comm)
	}
	if p.Exe != "" {
		enc.AddString("executable", p.Exe)
	}
	if p.Cmdline != "" {
		enc.AddString("command_line", p.Cmdline)
	}
	enc.AddObject("user", (*ecsProcessUser)(d))
	return nil
}

// ecsProcessUser is the process's effective user, which ECS puts in
// process.user.
type ecsProcessUser ecsDoc

func (d *ecsProcessUser) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	p := d.ev.Process
	addUintString(enc, "id", uint64(p.UID), &d.scratch)
	if p.User != "" {
		enc.AddString("name", p.User)
	}
	return nil
}

type ecsContainer ecsDoc

func (d *ecsContainer) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("id", d.ev.ContainerID())
	if c := d.ev.Container; c != nil {
		if c.Name != "" {
			enc.AddString("name", c.Name)
		}
		if c.Image != "" || c.ImageID != "" {
			enc.AddObject("image", (*ecsContainerImage)(d))
		}
	}
	return nil
}

// ecsContainerImage splits the image reference as ECS wants it:
// container.image.name is the repository, container.image.tag its tag;
// the runtime's image id is a digest of the image, in hash.all.
type ecsContainerImage ecsDoc

func (d *ecsContainerImage) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	c := d.ev.Container
	name, tag, digest := splitImageRef(c.Image)
	if name != "" {
		enc.AddString("name", name)
	}
	if tag != "" {
		// ecs_flat: container.image.tag is normalized to an array.
		enc.AddArray("tag", (*ecsImageTag)(d))
	}
	if c.ImageID != "" || digest != "" {
		enc.AddObject("hash", (*ecsImageHash)(d))
	}
	return nil
}

type ecsImageTag ecsDoc

func (d *ecsImageTag) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	_, tag, _ := splitImageRef(d.ev.Container.Image)
	enc.AppendString(tag)
	return nil
}

type ecsImageHash ecsDoc

func (d *ecsImageHash) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return enc.AddArray("all", (*ecsImageDigests)(d))
}

type ecsImageDigests ecsDoc

func (d *ecsImageDigests) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	c := d.ev.Container
	_, _, digest := splitImageRef(c.Image)
	if digest != "" {
		enc.AppendString(digest)
	}
	if c.ImageID != "" && c.ImageID != digest {
		enc.AppendString(c.ImageID)
	}
	return nil
}

// ecsOrchestrator is the Kubernetes pod the container belongs to.
type ecsOrchestrator ecsDoc

func (d *ecsOrchestrator) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	c := d.ev.Container
	enc.AddString("type", "kubernetes")
	if c.PodNamespace != "" {
		enc.AddString("namespace", c.PodNamespace)
	}
	return enc.AddObject("resource", (*ecsOrchestratorResource)(d))
}

type ecsOrchestratorResource ecsDoc

func (d *ecsOrchestratorResource) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	c := d.ev.Container
	enc.AddString("type", "pod")
	if c.PodName != "" {
		enc.AddString("name", c.PodName)
	}
	if c.PodUID != "" {
		enc.AddString("id", c.PodUID)
	}
	return nil
}

// splitImageRef splits an image reference ("registry:5000/shop/web:1.4",
// "web@sha256:…") into its repository, tag and digest; each is "" when
// absent.
func splitImageRef(ref string) (name, tag, digest string) {
	if i := strings.LastIndexByte(ref, '@'); i >= 0 {
		ref, digest = ref[:i], ref[i+1:]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref, tag = ref[:i], ref[i+1:]
	}
	return ref, tag, digest
}

// ecsConnlogd holds what ECS has no field for. ECS has no network
// namespace field (host.pid_ns_ino is the pid namespace's); gaps carry
// the namespace they concern too.
type ecsConnlogd ecsDoc

func (d *ecsConnlogd) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	ev := d.ev
	addNetns(enc, ev)
	if ev.Kind == event.Gap {
		if ev.Count != 0 {
			enc.AddUint64("count", ev.Count)
		}
		return nil
	}
	s := &ev.Socket
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
	if ev.Direction != event.DirectionUnknown {
		enc.AddString("direction", ev.Direction.String())
	}
	// ECS has no cgroup or systemd unit field; the container id is in
	// container.id.
	addCgroup(enc, ev.Cgroup)
	addFlags(enc, ev)
	if cause := ev.Failure.String(); ev.Kind == event.Closed && cause != "" {
		enc.AddString("failure", cause)
	}
	if in := trafficInfo(ev); in != nil {
		addInfoRest(enc, in)
	}
	return nil
}

// trafficInfo is the TCP counters of a closed or updated TCP socket, nil
// for any other event: ECS and OCSF report traffic when it is final, and
// in flow updates.
func trafficInfo(ev *event.Event) *snapshot.TCPInfo {
	s := &ev.Socket
	if (ev.Kind == event.Closed || ev.Kind == event.Updated) && s.Proto == snapshot.ProtoTCP && s.HasInfo {
		return &s.Info
	}
	return nil
}
