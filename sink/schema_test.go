package sink

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// encodeSchema writes evs through a Tee with one sink of schema s and
// returns the lines.
func encodeSchema(t testing.TB, s schema, evs ...event.Event) []string {
	t.Helper()
	var b bytes.Buffer
	tee := &Tee{}
	tee.add(newStreamWriter("sink test", &b), s, Options{Host: "web-1", Version: "1.2.3"})
	for i := range evs {
		if err := tee.Write(&evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end in a newline: %q", out)
	}
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

// doc is a decoded JSON object with typed lookups by dotted path.
type doc struct {
	t *testing.T
	m map[string]any
}

func decode(t *testing.T, line string) doc {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("invalid JSON: %v: %s", err, line)
	}
	return doc{t, m}
}

func (d doc) get(path string) (any, bool) {
	var v any = d.m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func (d doc) str(path string) string {
	d.t.Helper()
	v, ok := d.get(path)
	s, isStr := v.(string)
	if !ok || !isStr {
		d.t.Errorf("%s: %v (%T), want a string", path, v, v)
	}
	return s
}

func (d doc) num(path string) int64 {
	d.t.Helper()
	v, ok := d.get(path)
	n, isNum := v.(json.Number)
	i, err := n.Int64()
	if !ok || !isNum || err != nil {
		d.t.Errorf("%s: %v (%T), want an integer", path, v, v)
	}
	return i
}

func (d doc) strs(path string) []string {
	d.t.Helper()
	v, ok := d.get(path)
	arr, isArr := v.([]any)
	if !ok || !isArr {
		d.t.Errorf("%s: %v (%T), want an array of strings", path, v, v)
		return nil
	}
	var out []string
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			d.t.Errorf("%s: element %v (%T), want a string", path, e, e)
		}
		out = append(out, s)
	}
	return out
}

func (d doc) absent(paths ...string) {
	d.t.Helper()
	for _, p := range paths {
		if v, ok := d.get(p); ok {
			d.t.Errorf("%s present (%v), want absent", p, v)
		}
	}
}

func (d doc) boolean(path string) bool {
	d.t.Helper()
	v, ok := d.get(path)
	b, isBool := v.(bool)
	if !ok || !isBool {
		d.t.Errorf("%s: %v (%T), want a boolean", path, v, v)
	}
	return b
}

// fields are expected values by dotted path: a string or an int64 is a
// JSON string or integer of that exact value, a bool a JSON boolean,
// missing{} an absent field, and keys the exact member names of an
// object.
type fields map[string]any

type missing struct{}

type keys []string

// fieldCase is one event and what its document holds.
type fieldCase struct {
	name string
	ev   event.Event
	want fields
}

// expectFields encodes each case's event in schema s and checks its
// document.
func expectFields(t *testing.T, s schema, cases []fieldCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run("attribution/"+tt.name, func(t *testing.T) {
			lines := encodeSchema(t, s, tt.ev)
			if len(lines) != 1 {
				t.Fatalf("%d lines", len(lines))
			}
			decode(t, lines[0]).expect(tt.want)
		})
	}
}

func (d doc) expect(want fields) {
	d.t.Helper()
	paths := make([]string, 0, len(want))
	for p := range want {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		switch w := want[p].(type) {
		case string:
			if got := d.str(p); got != w {
				d.t.Errorf("%s = %q, want %q", p, got, w)
			}
		case int64:
			if got := d.num(p); got != w {
				d.t.Errorf("%s = %d, want %d", p, got, w)
			}
		case bool:
			if got := d.boolean(p); got != w {
				d.t.Errorf("%s = %v, want %v", p, got, w)
			}
		case missing:
			d.absent(p)
		case keys:
			v, _ := d.get(p)
			obj, ok := v.(map[string]any)
			if !ok {
				d.t.Errorf("%s: %v (%T), want an object", p, v, v)
				continue
			}
			var got []string
			for k := range obj {
				got = append(got, k)
			}
			sort.Strings(got)
			wk := append([]string(nil), w...)
			sort.Strings(wk)
			if strings.Join(got, ",") != strings.Join(wk, ",") {
				d.t.Errorf("%s has members %v, want %v", p, got, wk)
			}
		default:
			d.t.Fatalf("%s: bad expectation %T", p, w)
		}
	}
}

func (d doc) ip(path string) netip.Addr {
	d.t.Helper()
	a, err := netip.ParseAddr(d.str(path))
	if err != nil {
		d.t.Errorf("%s: %v", path, err)
	}
	return a
}

func TestECS(t *testing.T) {
	evs := schemaEvents()
	for i, line := range encodeSchema(t, schemaECS, evs...) {
		ev := &evs[i]
		t.Run(ev.Kind.String()+"/"+ev.Socket.Proto.String(), func(t *testing.T) {
			d := decode(t, line)
			ts, err := time.Parse(time.RFC3339Nano, d.str("@timestamp"))
			if err != nil || !ts.Equal(t0) {
				t.Errorf("@timestamp %v %v", ts, err)
			}
			if d.str("ecs.version") != ecsVersion || d.str("agent.type") != "connlogd" || d.str("agent.version") != "1.2.3" {
				t.Error("ecs.version, agent")
			}
			if d.str("event.kind") != "event" || strings.Join(d.strs("event.category"), ",") != "network" {
				t.Error("event.kind, event.category")
			}
			f := flowOf(ev)
			wantType := map[event.Kind]string{event.Appeared: "connection,start", event.Closed: "connection,end",
				event.StateChanged: "connection,info", event.Updated: "connection,info", event.Gap: "info", event.Snapshot: "connection,info"}[ev.Kind]
			if !f.hasClient && ev.Kind != event.Gap {
				wantType = strings.TrimPrefix(wantType, "connection,")
			}
			if got := strings.Join(d.strs("event.type"), ","); got != wantType {
				t.Errorf("event.type %s, want %s", got, wantType)
			}
			if d.str("event.action") != ev.Kind.String() || d.str("host.hostname") != "web-1" || d.str("host.name") != "web-1" {
				t.Error("event.action, host")
			}
			if id := d.str("event.id"); len(id) != 32 {
				t.Errorf("event.id %q", id)
			}
			if ev.Kind == event.Closed && ev.Failure.Failed() {
				if d.str("event.outcome") != "failure" {
					t.Error("event.outcome")
				}
				if cause := ev.Failure.String(); cause == "" {
					d.absent("connlogd.failure")
				} else if d.str("connlogd.failure") != cause {
					t.Error("connlogd.failure")
				}
			} else {
				d.absent("event.outcome", "connlogd.failure")
			}
			if p := ev.Process; p == nil {
				d.absent("process")
			} else if d.num("process.pid") != int64(p.PID) || d.str("process.user.id") != strconv.FormatUint(uint64(p.UID), 10) {
				t.Error("process.pid, process.user.id")
			}
			if ev.Netns != 0 && d.num("connlogd.netns") != int64(ev.Netns) {
				t.Error("connlogd.netns")
			}
			if ev.Kind == event.Gap {
				d.absent("source", "destination", "network", "user", "container")
				if d.str("event.reason") != ev.Reason || d.str("log.level") != "warning" {
					t.Error("gap reason, log.level")
				}
				return
			}
			s := &ev.Socket
			// Initiator first (flowOf, tested on its own).
			if f.hasClient {
				if d.ip("source.ip") != f.client.Addr() || d.num("source.port") != int64(f.client.Port()) {
					t.Error("source")
				}
			} else {
				d.absent("source")
			}
			if d.ip("destination.ip") != f.server.Addr() || d.num("destination.port") != int64(f.server.Port()) {
				t.Error("destination")
			}
			if d.str("network.transport") != s.Proto.String() || d.str("network.type") != f.networkType() ||
				d.str("network.iana_number") != ianaNumber(s.Proto) {
				t.Error("network")
			}
			if id, ok := appendCommunityID(nil, s.Proto, s.Src, s.Dst); ok {
				if d.str("network.community_id") != string(id) {
					t.Error("network.community_id")
				}
			} else {
				d.absent("network.community_id")
			}
			if ev.ShortLived {
				d.absent("user")
			} else if d.str("user.id") != strconv.FormatUint(uint64(s.UID), 10) {
				t.Errorf("user.id %s", d.str("user.id"))
			}
			wantDir := map[event.Direction]string{event.DirectionInbound: "ingress", event.DirectionOutbound: "egress"}[ev.Direction]
			if wantDir == "" {
				d.absent("network.direction")
			} else if d.str("network.direction") != wantDir {
				t.Errorf("network.direction %s, want %s", d.str("network.direction"), wantDir)
			}
			if d.str("connlogd.state") != s.State.String() || d.str("connlogd.cookie") != strconv.FormatUint(s.Cookie, 10) {
				t.Error("connlogd.state, connlogd.cookie")
			}
			if ev.Kind == event.Closed || ev.Kind == event.Updated {
				if d.num("event.duration") != int64(ev.Duration()) {
					t.Errorf("event.duration %d", d.num("event.duration"))
				}
				d.str("event.start")
				if ev.Kind == event.Closed {
					d.str("event.end")
				} else {
					d.absent("event.end")
				}
				// The side that sent them: the client's sent bytes are
				// source.bytes.
				if s.HasInfo && s.Info.Len >= infoLenBytesSent && f.hasClient {
					cs, ss, cp := s.Info.BytesSent, s.Info.BytesReceived, s.Info.SegsOut
					if !f.localIsClient {
						cs, ss, cp = ss, cs, s.Info.SegsIn
					}
					if d.num("source.bytes") != int64(cs) || d.num("destination.bytes") != int64(ss) ||
						d.num("network.bytes") != int64(s.Info.BytesSent+s.Info.BytesReceived) ||
						d.num("source.packets") != int64(cp) || d.num("network.packets") != int64(s.Info.SegsOut+s.Info.SegsIn) {
						t.Error("bytes and packets")
					}
				}
			} else {
				d.absent("event.duration", "source.bytes", "destination.bytes")
			}
		})
	}

	inboundCgroup := "/system.slice/docker-" + attrCtr + ".scope"
	expectFields(t, schemaECS, []fieldCase{{
		name: "inbound, owner in a container, named netns",
		ev:   attrInbound(),
		want: fields{
			"process":               keys{"pid", "name", "executable", "command_line", "user"},
			"process.pid":           int64(5150),
			"process.name":          "gunicorn",
			"process.executable":    "/usr/bin/python3.11",
			"process.command_line":  `/usr/bin/python3.11 /usr/local/bin/gunicorn -b "0.0.0.0:8080" app:app`,
			"process.user":          keys{"id", "name"},
			"process.user.id":       "33",
			"process.user.name":     "www-data",
			"user":                  keys{"id"},
			"user.id":               "33",
			"network.direction":     "ingress",
			"container":             keys{"id"},
			"container.id":          attrCtr,
			"connlogd.direction":    "inbound",
			"connlogd.cgroup":       inboundCgroup,
			"connlogd.systemd_unit": "docker-" + attrCtr + ".scope",
			"connlogd.netns":        int64(4026532449),
			"connlogd.netns_name":   "web",
			"connlogd.container_id": missing{},
			"connlogd.late":         missing{},
			// The remote end initiated: it is the source.
			"source.ip":        "192.0.2.10",
			"source.port":      int64(51234),
			"destination.ip":   "172.17.0.2",
			"destination.port": int64(8080),
		},
	}, {
		name: "nothing known: no direction, owner, cgroup or netns",
		ev:   event.Event{Kind: event.Appeared, Time: t0, Socket: tcp4, FirstSeen: t0},
		want: fields{
			"process":               missing{},
			"container":             missing{},
			"user.id":               "1000",
			"network":               keys{"transport", "type", "iana_number", "community_id"},
			"connlogd":              keys{"state", "cookie", "inode"},
			"connlogd.direction":    missing{},
			"connlogd.netns":        missing{},
			"connlogd.netns_name":   missing{},
			"connlogd.cgroup":       missing{},
			"connlogd.systemd_unit": missing{},
		},
	}, {
		name: "listener: no network.direction, exe replaced, unnamed netns, late",
		ev:   attrListen(),
		want: fields{
			"network.direction":     missing{},
			"source":                missing{},
			"destination":           keys{"ip", "port"},
			"destination.ip":        "0.0.0.0",
			"destination.port":      int64(22),
			"connlogd.direction":    "listen",
			"process":               keys{"pid", "name", "executable", "user"},
			"process.pid":           int64(701),
			"process.name":          "sshd",
			"process.executable":    "/usr/sbin/sshd (deleted)",
			"process.user.id":       "0",
			"process.user.name":     "root",
			"user.id":               "0",
			"container":             missing{},
			"connlogd.cgroup":       "/system.slice/ssh.service",
			"connlogd.systemd_unit": "ssh.service",
			"connlogd.netns":        int64(4026531840),
			"connlogd.netns_name":   missing{},
			"connlogd.late":         true,
			"connlogd.initial":      missing{},
		},
	}, {
		name: "outbound, owner without exe or cmdline, no cgroup",
		ev:   attrPartial(),
		want: fields{
			"network.direction":   "egress",
			"connlogd.direction":  "outbound",
			"process":             keys{"pid", "name", "user"},
			"process.pid":         int64(4243),
			"process.name":        "curl",
			"process.user":        keys{"id", "name"},
			"process.user.id":     "1000",
			"process.user.name":   "1000",
			"container":           missing{},
			"connlogd.cgroup":     missing{},
			"connlogd.netns":      missing{},
			"connlogd.prev_state": "established",
		},
	}, {
		name: "short-lived in a container: cgroup without process or unit",
		ev:   attrShort(),
		want: fields{
			"process":               missing{},
			"user":                  missing{},
			"container.id":          attrCtr2,
			"network.direction":     "egress",
			"connlogd.direction":    "outbound",
			"connlogd.cgroup":       "/kubepods/besteffort/pod5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90/" + attrCtr2,
			"connlogd.systemd_unit": missing{},
			"connlogd.short_lived":  true,
			"connlogd.netns":        int64(4026532449),
			"connlogd.netns_name":   "web",
		},
	}, {
		name: "gap in a namespace",
		ev:   attrGap(),
		want: fields{
			"connlogd":            keys{"netns", "netns_name"},
			"connlogd.netns":      int64(4026532449),
			"connlogd.netns_name": "web",
			"event.reason":        "destroy_overrun",
			"process":             missing{},
			"container":           missing{},
			"network":             missing{},
		},
	}, {
		name: "gap without namespace",
		ev:   event.Event{Kind: event.Gap, Time: t0, Reason: "malformed_netlink", Count: 3},
		want: fields{
			"connlogd":       keys{"count"},
			"connlogd.count": int64(3),
		},
	}})
}

func TestOCSF(t *testing.T) {
	evs := schemaEvents()
	for i, line := range encodeSchema(t, schemaOCSF, evs...) {
		ev := &evs[i]
		t.Run(ev.Kind.String()+"/"+ev.Socket.Proto.String(), func(t *testing.T) {
			d := decode(t, line)
			class, cat, act := d.num("class_uid"), d.num("category_uid"), d.num("activity_id")
			if d.num("type_uid") != class*100+act {
				t.Errorf("type_uid %d, want %d", d.num("type_uid"), class*100+act)
			}
			if d.num("time") != t0.UnixMilli() {
				t.Errorf("time %d, want %d", d.num("time"), t0.UnixMilli())
			}
			if d.str("metadata.version") != ocsfVersion || d.str("metadata.product.name") != "connlogd" ||
				d.str("metadata.product.version") != "1.2.3" || d.str("metadata.event_code") != ev.Kind.String() {
				t.Error("metadata")
			}
			if id := d.str("metadata.uid"); len(id) != 32 {
				t.Errorf("metadata.uid %q", id)
			}
			d.str("activity_name")
			d.str("type_name")
			if p := ev.Process; p == nil {
				d.absent("actor.process")
			} else if d.num("actor.process.pid") != int64(p.PID) || d.str("actor.process.user.uid") != strconv.FormatUint(uint64(p.UID), 10) {
				t.Error("actor.process.pid, actor.process.user.uid")
			}
			if ev.Netns != 0 && d.num("unmapped.netns") != int64(ev.Netns) {
				t.Error("unmapped.netns")
			}
			if ev.Kind == event.Gap {
				if class != 0 || cat != 0 || act != 99 || d.num("severity_id") != 3 || d.str("unmapped.reason") != ev.Reason ||
					d.str("type_name") != "Base Event: Gap" || d.str("unmapped.hostname") != "web-1" {
					t.Errorf("gap: class %d category %d activity %d", class, cat, act)
				}
				// Base Event has no device; no profile is used.
				d.absent("src_endpoint", "dst_endpoint", "connection_info", "device", "metadata.profiles")
				return
			}
			wantProfiles := "host"
			if ev.ContainerID() != "" {
				wantProfiles = "host,container"
			}
			if d.str("device.hostname") != "web-1" || strings.Join(d.strs("metadata.profiles"), ",") != wantProfiles {
				t.Errorf("device.hostname, metadata.profiles %v, want %s", d.strs("metadata.profiles"), wantProfiles)
			}
			listen := ev.Direction == event.DirectionListen
			wantAct := map[event.Kind]int64{event.Appeared: 1, event.Closed: 2, event.StateChanged: 99, event.Snapshot: 6, event.Updated: 6}[ev.Kind]
			switch {
			case listen && (ev.Kind == event.Appeared || ev.Kind == event.Snapshot):
				wantAct = 7
			case ev.Kind == event.Closed && ev.Failure == event.FailedRefused:
				wantAct = 5
			case ev.Kind == event.Closed && ev.Failure.Failed():
				wantAct = 4
			}
			if class != 4001 || cat != 4 || act != wantAct || d.num("severity_id") != 1 {
				t.Errorf("class %d category %d activity %d, want 4001 4 %d", class, cat, act, wantAct)
			}
			s := &ev.Socket
			f := flowOf(ev)
			if f.hasClient {
				if d.ip("src_endpoint.ip") != f.client.Addr() || d.num("src_endpoint.port") != int64(f.client.Port()) {
					t.Error("src_endpoint")
				}
			} else {
				d.absent("src_endpoint")
			}
			if d.ip("dst_endpoint.ip") != f.server.Addr() || d.num("dst_endpoint.port") != int64(f.server.Port()) {
				t.Error("dst_endpoint")
			}
			wantDir := map[event.Direction]int64{event.DirectionListen: 99, event.DirectionInbound: 1, event.DirectionOutbound: 2}[ev.Direction]
			if d.str("connection_info.protocol_name") != s.Proto.String() || d.num("connection_info.protocol_num") != int64(s.Proto) ||
				d.num("connection_info.direction_id") != wantDir {
				t.Error("connection_info")
			}
			if d.num("connection_info.protocol_ver_id") != f.ipVersion() {
				t.Error("protocol_ver_id")
			}
			// OCSF 1.3.0 has no attribute for it.
			d.absent("connection_info.community_uid")
			if id, ok := appendCommunityID(nil, s.Proto, s.Src, s.Dst); ok {
				if d.str("unmapped.community_id") != string(id) {
					t.Error("unmapped.community_id")
				}
			} else {
				d.absent("unmapped.community_id")
			}
			if ev.Kind == event.Closed && ev.Failure.Failed() {
				if d.num("status_id") != 2 || d.str("status") != "Failure" {
					t.Error("status")
				}
			} else {
				d.absent("status_id", "status", "status_detail")
			}
			if ev.ShortLived {
				d.absent("actor.user")
			} else if d.str("actor.user.uid") != strconv.FormatUint(uint64(s.UID), 10) {
				t.Error("actor.user.uid")
			}
			if d.str("unmapped.state") != s.State.String() || d.str("unmapped.cookie") != strconv.FormatUint(s.Cookie, 10) {
				t.Error("unmapped")
			}
			if (ev.Kind == event.Closed || ev.Kind == event.Updated) && s.HasInfo && s.Info.Len >= infoLenBytesSent {
				// out: what the source (the initiator) sent.
				out, in, pout, pin := s.Info.BytesSent, s.Info.BytesReceived, s.Info.SegsOut, s.Info.SegsIn
				if !f.localIsClient && f.hasClient {
					out, in, pout, pin = in, out, pin, pout
				}
				if d.num("traffic.bytes_in") != int64(in) || d.num("traffic.bytes_out") != int64(out) ||
					d.num("traffic.packets_in") != int64(pin) || d.num("traffic.packets_out") != int64(pout) {
					t.Error("traffic")
				}
				if d.num("duration") != ev.Duration().Milliseconds() {
					t.Error("duration")
				}
				if ev.Kind == event.Closed && d.num("end_time") != t0.UnixMilli() {
					t.Error("end_time")
				}
			} else if ev.Kind != event.Closed && ev.Kind != event.Updated {
				d.absent("traffic", "duration")
			}
		})
	}

	inboundCgroup := "/system.slice/docker-" + attrCtr + ".scope"
	expectFields(t, schemaOCSF, []fieldCase{{
		name: "inbound, owner in a container, named netns",
		ev:   attrInbound(),
		want: fields{
			"connection_info.direction_id": int64(1),
			"connection_info.direction":    "Inbound",
			"actor":                        keys{"user", "process"},
			"actor.user":                   keys{"uid"},
			"actor.user.uid":               "33",
			"actor.process":                keys{"pid", "name", "file", "cmd_line", "user"},
			"actor.process.pid":            int64(5150),
			"actor.process.name":           "gunicorn",
			"actor.process.file":           keys{"name", "path", "type_id"},
			"actor.process.file.name":      "python3.11",
			"actor.process.file.path":      "/usr/bin/python3.11",
			"actor.process.file.type_id":   int64(1),
			"actor.process.cmd_line":       `/usr/bin/python3.11 /usr/local/bin/gunicorn -b "0.0.0.0:8080" app:app`,
			"actor.process.user":           keys{"uid", "name"},
			"actor.process.user.uid":       "33",
			"actor.process.user.name":      "www-data",
			// The remote end initiated; the local end, in the container,
			// is the destination.
			"src_endpoint":               keys{"ip", "port"},
			"src_endpoint.ip":            "192.0.2.10",
			"dst_endpoint":               keys{"ip", "port", "container"},
			"dst_endpoint.ip":            "172.17.0.2",
			"dst_endpoint.container":     keys{"uid"},
			"dst_endpoint.container.uid": attrCtr,
			"container":                  missing{},
			"unmapped.netns":             int64(4026532449),
			"unmapped.netns_name":        "web",
			"unmapped.cgroup":            inboundCgroup,
			"unmapped.systemd_unit":      "docker-" + attrCtr + ".scope",
			"unmapped.container_id":      missing{},
			"unmapped.direction":         missing{},
			"unmapped.late":              missing{},
		},
	}, {
		name: "nothing known: no direction, owner, cgroup or netns",
		ev:   event.Event{Kind: event.Appeared, Time: t0, Socket: tcp4, FirstSeen: t0},
		want: fields{
			// direction_id is required: unknown is written, as 0.
			"connection_info.direction_id": int64(0),
			"connection_info.direction":    "Unknown",
			"actor":                        keys{"user"},
			"actor.user.uid":               "1000",
			"src_endpoint":                 keys{"ip", "port"},
			"unmapped":                     keys{"community_id", "state", "cookie", "inode"},
		},
	}, {
		name: "listener: direction Other, exe replaced, unnamed netns, late",
		ev:   attrListen(),
		want: fields{
			"activity_id":                  int64(7),
			"activity_name":                "Listen",
			"type_name":                    "Network Activity: Listen",
			"src_endpoint":                 missing{},
			"dst_endpoint":                 keys{"ip", "port"},
			"dst_endpoint.port":            int64(22),
			"connection_info.direction_id": int64(99),
			"connection_info.direction":    "Listen",
			"actor.user.uid":               "0",
			"actor.process":                keys{"pid", "name", "file", "user"},
			"actor.process.pid":            int64(701),
			"actor.process.name":           "sshd",
			"actor.process.file.name":      "sshd (deleted)",
			"actor.process.file.path":      "/usr/sbin/sshd (deleted)",
			"actor.process.file.type_id":   int64(1),
			"actor.process.user.uid":       "0",
			"actor.process.user.name":      "root",
			"src_endpoint.container":       missing{},
			"unmapped.cgroup":              "/system.slice/ssh.service",
			"unmapped.systemd_unit":        "ssh.service",
			"unmapped.netns":               int64(4026531840),
			"unmapped.netns_name":          missing{},
			"unmapped.late":                true,
		},
	}, {
		name: "outbound, owner without exe or cmdline, no cgroup",
		ev:   attrPartial(),
		want: fields{
			"connection_info.direction_id": int64(2),
			"connection_info.direction":    "Outbound",
			"actor.process":                keys{"pid", "name", "user"},
			"actor.process.pid":            int64(4243),
			"actor.process.name":           "curl",
			"actor.process.user":           keys{"uid", "name"},
			"actor.process.user.uid":       "1000",
			"actor.process.user.name":      "1000",
			"src_endpoint.container":       missing{},
			"unmapped.cgroup":              missing{},
			"unmapped.systemd_unit":        missing{},
			"unmapped.netns":               missing{},
		},
	}, {
		name: "short-lived in a container: cgroup without process or unit",
		ev:   attrShort(),
		want: fields{
			"actor":                        missing{},
			"connection_info.direction_id": int64(2),
			"src_endpoint.container.uid":   attrCtr2,
			"unmapped.cgroup":              "/kubepods/besteffort/pod5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90/" + attrCtr2,
			"unmapped.systemd_unit":        missing{},
			"unmapped.short_lived":         true,
			"unmapped.netns":               int64(4026532449),
			"unmapped.netns_name":          "web",
		},
	}, {
		name: "short-lived with an owner: actor.process without actor.user",
		ev: func() event.Event {
			ev := attrShort()
			p := event.Process{PID: 4244, UID: 1000, User: "alice", Comm: "wget"}
			ev.Process = &p
			return ev
		}(),
		want: fields{
			"actor":                   keys{"process"},
			"actor.process.pid":       int64(4244),
			"actor.process.user.name": "alice",
		},
	}, {
		name: "gap in a namespace",
		ev:   attrGap(),
		want: fields{
			"unmapped":            keys{"hostname", "netns", "netns_name", "reason"},
			"unmapped.netns":      int64(4026532449),
			"unmapped.netns_name": "web",
			"unmapped.reason":     "destroy_overrun",
			"actor":               missing{},
			"connection_info":     missing{},
		},
	}, {
		name: "gap without namespace",
		ev:   event.Event{Kind: event.Gap, Time: t0, Reason: "malformed_netlink", Count: 3},
		want: fields{
			"unmapped":       keys{"hostname", "reason", "count"},
			"unmapped.count": int64(3),
		},
	}})
}

// Attribution test data: container ids, a connection accepted by a
// process in a container, in a named network namespace.
const (
	attrCtr  = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	attrCtr2 = "1b4f0e9851971998e732078544c96b36c3d01cedf7caa332359d6f1d83567014"
)

func attrInbound() event.Event {
	sock := snapshot.Socket{
		Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: 4102,
			Src: netip.MustParseAddrPort("172.17.0.2:8080"), Dst: netip.MustParseAddrPort("192.0.2.10:51234"),
		},
		State: snapshot.StateEstablished, UID: 33, Inode: 31337, CgroupID: 6002,
	}
	p := event.Process{PID: 5150, UID: 33, User: "www-data", Comm: "gunicorn", Exe: "/usr/bin/python3.11",
		Cmdline: `/usr/bin/python3.11 /usr/local/bin/gunicorn -b "0.0.0.0:8080" app:app`}
	c := event.Cgroup{Path: "/system.slice/docker-" + attrCtr + ".scope", SystemdUnit: "docker-" + attrCtr + ".scope", ContainerID: attrCtr}
	return event.Event{Kind: event.Appeared, Time: t0, Socket: sock, FirstSeen: t0,
		Direction: event.DirectionInbound, Process: &p, Cgroup: &c, Netns: 4026532449, NetnsName: "web"}
}

// attrListen is a listener found at start-up from the saved table, whose
// executable was replaced since the daemon started.
func attrListen() event.Event {
	sock := snapshot.Socket{
		Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: 4099,
			Src: netip.MustParseAddrPort("0.0.0.0:22"), Dst: netip.MustParseAddrPort("0.0.0.0:0"),
		},
		State: snapshot.StateListen, Inode: 20480, CgroupID: 5100,
	}
	p := event.Process{PID: 701, UID: 0, User: "root", Comm: "sshd", Exe: "/usr/sbin/sshd (deleted)"}
	c := event.Cgroup{Path: "/system.slice/ssh.service", SystemdUnit: "ssh.service"}
	return event.Event{Kind: event.Appeared, Time: t0, Socket: sock, FirstSeen: t0, Late: true,
		Direction: event.DirectionListen, Process: &p, Cgroup: &c, Netns: 4026531840}
}

// attrPartial's owner has no readable exe and no command line, and its
// cgroup is unknown.
func attrPartial() event.Event {
	sock := tcp4
	sock.State = snapshot.StateCloseWait
	p := event.Process{PID: 4243, UID: 1000, User: "1000", Comm: "curl"}
	return event.Event{Kind: event.StateChanged, Time: t0, Socket: sock, PrevState: snapshot.StateEstablished,
		FirstSeen: t0.Add(-time.Minute), Direction: event.DirectionOutbound, Process: &p}
}

// attrShort is a short-lived connection from a container under the
// cgroupfs driver: cgroup known, no owner (inode and uid are 0).
func attrShort() event.Event {
	sock := snapshot.Socket{
		Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: 4103,
			Src: netip.MustParseAddrPort("10.244.1.7:38022"), Dst: netip.MustParseAddrPort("10.96.0.10:53"),
		},
		State: snapshot.StateEstablished, CgroupID: 6003,
	}
	c := event.Cgroup{Path: "/kubepods/besteffort/pod5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90/" + attrCtr2, ContainerID: attrCtr2}
	return event.Event{Kind: event.Closed, Time: t0, Socket: sock, FirstSeen: t0, ShortLived: true, Reason: event.ReasonDestroyed,
		Direction: event.DirectionOutbound, Cgroup: &c, Netns: 4026532449, NetnsName: "web"}
}

// attrPod is a short-lived connection in a Kubernetes pod's namespace:
// no cgroup (a destroy notification), the container known from the
// namespace and named by its runtime.
func attrPod() event.Event {
	sock := snapshot.Socket{
		Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: 4104,
			Src: netip.MustParseAddrPort("10.244.1.7:38030"), Dst: netip.MustParseAddrPort("10.96.0.1:443"),
		},
		State: snapshot.StateEstablished,
	}
	c := event.Container{ID: attrCtr2, Name: "k8s_api_api-7d4b9_shop_5f1c0e2a_0", Image: "registry.local:5000/shop/api:1.4",
		ImageID: "sha256:3f2d1b6e7c905f1c0e2a8d0b4c7e9a513f2d1b6e7c905f1c0e2a8d0b4c7e9a51",
		PodName: "api-7d4b9", PodNamespace: "shop", PodUID: "5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90"}
	return event.Event{Kind: event.Closed, Time: t0, Socket: sock, FirstSeen: t0, ShortLived: true, Reason: event.ReasonDestroyed,
		Direction: event.DirectionOutbound, Container: &c, Netns: 4026532450}
}

func attrGap() event.Event {
	return event.Event{Kind: event.Gap, Time: t0, Reason: "destroy_overrun", Netns: 4026532449, NetnsName: "web"}
}

// attributionEvents are the events above, for the docs' examples and the
// allocation test.
func attributionEvents() []event.Event {
	return []event.Event{attrInbound(), attrListen(), attrPartial(), attrShort(), attrPod(), attrGap()}
}

// schemaEvents are the golden events (every kind, both protocols and
// families, a short-lived close, owners) and the attribution events
// (directions, owners, cgroups, namespaces).
func schemaEvents() []event.Event {
	var evs []event.Event
	for _, c := range goldenCases() {
		evs = append(evs, c.ev)
	}
	return append(evs, attributionEvents()...)
}

// TestDocsExamples keeps docs/events.md, docs/ecs.md and docs/ocsf.md
// honest: each example there is exactly what the encoder writes for one
// of schemaEvents (with version 1.2.3).
func TestDocsExamples(t *testing.T) {
	for _, tt := range []struct {
		file   string
		s      schema
		prefix string // of an example line
		min    int
	}{
		{"../docs/events.md", schemaNative, `{"ts":`, 5}, // one per kind
		{"../docs/ecs.md", schemaECS, "{", 3},
		{"../docs/ocsf.md", schemaOCSF, "{", 3},
	} {
		doc, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, l := range encodeSchema(t, tt.s, schemaEvents()...) {
			want[l] = true
		}
		n := 0
		for _, l := range strings.Split(string(doc), "\n") {
			if strings.HasPrefix(l, tt.prefix) {
				n++
				if !want[l] {
					t.Errorf("%s example is not what the encoder writes:\n%s", tt.file, l)
				}
			}
		}
		if n < tt.min {
			t.Errorf("%s: %d examples, want at least %d", tt.file, n, tt.min)
		}
	}
}

// Strings of every kind of byte decode as encoding/json reads them, in
// every schema: one writer quotes them all.
func TestJSONStrings(t *testing.T) {
	paths := [numSchemas]string{schemaNative: "cmdline", schemaECS: "process.command_line", schemaOCSF: "actor.process.cmd_line"}
	for s, path := range paths {
		for _, str := range []string{"", "plain", `q"uote\back`, "ctl\x00\x01\x1f\n\r\t\x7f", "bad\xffutf8", "é ü 日本", "line\u2028sep\u2029", "<html>&"} {
			ev := attrInbound()
			ev.Process.Cmdline = str
			line := encodeSchema(t, schema(s), ev)[0]
			d := decode(t, line)
			if str == "" {
				d.absent(path)
				continue
			}
			if got, want := d.str(path), strings.ToValidUTF8(str, "\ufffd"); got != want {
				t.Errorf("schema %d: %q decoded as %q from %s", s, str, got, line)
			}
		}
	}
}

// TestEncodeNoAllocs: encoding costs no allocation in any schema, for
// every kind of event, owners and namespaces included.
func TestEncodeNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	evs := append(schemaEvents(), benchEvents()...)
	for s := range numSchemas {
		tee := &Tee{}
		tee.add(newStreamWriter("sink test", io.Discard), s, Options{Host: "web-1", Version: "1"})
		allocs := testing.AllocsPerRun(1000, func() {
			for i := range evs {
				if err := tee.Write(&evs[i]); err != nil {
					t.Fatal(err)
				}
			}
			tee.Sync()
		})
		if allocs > 0 {
			t.Errorf("schema %d: %v allocations per batch of %d events, want 0", s, allocs, len(evs))
		}
	}
}
