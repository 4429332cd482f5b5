package sink

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
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
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
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
			wantType := map[event.Kind]string{event.Appeared: "connection,start", event.Closed: "connection,end",
				event.StateChanged: "connection,change", event.Gap: "info", event.Snapshot: "info"}[ev.Kind]
			if got := strings.Join(d.strs("event.type"), ","); got != wantType {
				t.Errorf("event.type %s, want %s", got, wantType)
			}
			if d.str("event.action") != ev.Kind.String() || d.str("host.hostname") != "web-1" || d.str("host.name") != "web-1" {
				t.Error("event.action, host")
			}
			// Owner attribution is not in event.Event (yet): no process.
			d.absent("process")
			if ev.Kind == event.Gap {
				d.absent("source", "destination", "network", "user")
				if d.str("event.reason") != ev.Reason || d.str("log.level") != "warning" {
					t.Error("gap reason, log.level")
				}
				return
			}
			s := &ev.Socket
			if d.ip("source.ip") != s.Src.Addr().WithZone("") || d.num("source.port") != int64(s.Src.Port()) ||
				d.ip("destination.ip") != s.Dst.Addr() || d.num("destination.port") != int64(s.Dst.Port()) {
				t.Error("source, destination")
			}
			if d.str("network.transport") != s.Proto.String() || d.str("network.type") != s.Family.String() ||
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
			} else if d.str("user.id") != "1000" && d.str("user.id") != "0" && d.str("user.id") != "101" {
				t.Errorf("user.id %s", d.str("user.id"))
			}
			if d.str("connlogd.state") != s.State.String() || d.str("connlogd.cookie") != strconv.FormatUint(s.Cookie, 10) {
				t.Error("connlogd.state, connlogd.cookie")
			}
			if ev.Kind == event.Closed {
				if d.num("event.duration") != int64(ev.Duration()) {
					t.Errorf("event.duration %d", d.num("event.duration"))
				}
				d.str("event.start")
				d.str("event.end")
				if s.HasInfo && s.Info.Len >= infoLenBytesSent {
					if d.num("source.bytes") != int64(s.Info.BytesSent) || d.num("destination.bytes") != int64(s.Info.BytesReceived) ||
						d.num("network.bytes") != int64(s.Info.BytesSent+s.Info.BytesReceived) ||
						d.num("source.packets") != int64(s.Info.SegsOut) || d.num("network.packets") != int64(s.Info.SegsOut+s.Info.SegsIn) {
						t.Error("bytes and packets")
					}
				}
			} else {
				d.absent("event.duration", "source.bytes", "destination.bytes")
			}
		})
	}
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
			if d.str("device.hostname") != "web-1" {
				t.Error("device.hostname")
			}
			d.str("activity_name")
			d.str("type_name")
			d.absent("actor.process")
			if ev.Kind == event.Gap {
				if class != 0 || cat != 0 || act != 99 || d.num("severity_id") != 3 || d.str("unmapped.reason") != ev.Reason {
					t.Errorf("gap: class %d category %d activity %d", class, cat, act)
				}
				d.absent("src_endpoint", "dst_endpoint", "connection_info")
				return
			}
			wantAct := map[event.Kind]int64{event.Appeared: 1, event.Closed: 2, event.StateChanged: 99, event.Snapshot: 6}[ev.Kind]
			if class != 4001 || cat != 4 || act != wantAct || d.num("severity_id") != 1 {
				t.Errorf("class %d category %d activity %d, want 4001 4 %d", class, cat, act, wantAct)
			}
			s := &ev.Socket
			if d.ip("src_endpoint.ip") != s.Src.Addr().WithZone("") || d.num("src_endpoint.port") != int64(s.Src.Port()) ||
				d.ip("dst_endpoint.ip") != s.Dst.Addr() || d.num("dst_endpoint.port") != int64(s.Dst.Port()) {
				t.Error("endpoints")
			}
			if d.str("connection_info.protocol_name") != s.Proto.String() || d.num("connection_info.protocol_num") != int64(s.Proto) ||
				d.num("connection_info.direction_id") != 0 {
				t.Error("connection_info")
			}
			wantVer := map[string]int64{"ipv4": 4, "ipv6": 6}[s.Family.String()]
			if d.num("connection_info.protocol_ver_id") != wantVer {
				t.Error("protocol_ver_id")
			}
			if id, ok := appendCommunityID(nil, s.Proto, s.Src, s.Dst); ok {
				if d.str("connection_info.community_uid") != string(id) {
					t.Error("community_uid")
				}
			} else {
				d.absent("connection_info.community_uid")
			}
			if ev.ShortLived {
				d.absent("actor")
			} else {
				d.str("actor.user.uid")
			}
			if d.str("unmapped.state") != s.State.String() || d.str("unmapped.cookie") != strconv.FormatUint(s.Cookie, 10) {
				t.Error("unmapped")
			}
			if ev.Kind == event.Closed && s.HasInfo && s.Info.Len >= infoLenBytesSent {
				if d.num("traffic.bytes_in") != int64(s.Info.BytesReceived) || d.num("traffic.bytes_out") != int64(s.Info.BytesSent) ||
					d.num("traffic.packets_in") != int64(s.Info.SegsIn) || d.num("traffic.packets_out") != int64(s.Info.SegsOut) {
					t.Error("traffic")
				}
				if d.num("duration") != ev.Duration().Milliseconds() || d.num("end_time") != t0.UnixMilli() {
					t.Error("duration, end_time")
				}
			} else if ev.Kind != event.Closed {
				d.absent("traffic", "duration")
			}
		})
	}
}

// schemaEvents are the golden events: every kind, both protocols and
// families, a short-lived close.
func schemaEvents() []event.Event {
	var evs []event.Event
	for _, c := range goldenCases() {
		evs = append(evs, c.ev)
	}
	return evs
}

// TestSchemaDocsExamples keeps docs/ecs.md and docs/ocsf.md honest: each
// example there is what the encoder writes for a golden event (with
// version 1.2.3).
func TestSchemaDocsExamples(t *testing.T) {
	for _, tt := range []struct {
		file string
		s    schema
	}{{"../docs/ecs.md", schemaECS}, {"../docs/ocsf.md", schemaOCSF}} {
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
			if strings.HasPrefix(l, "{") {
				n++
				if !want[l] {
					t.Errorf("%s example is not what the encoder writes:\n%s", tt.file, l)
				}
			}
		}
		if n < 3 {
			t.Errorf("%s: %d examples, want at least 3", tt.file, n)
		}
	}
}

// The hand-written JSON strings decode as encoding/json reads them.
func TestJSONStrings(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "ctl\x00\x01\x1f\n\r\t", "bad\xffutf8", "é ü 日本", "line\u2028sep\u2029", "<html>&"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q: %s does not decode: %v", s, b, err)
			continue
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if got != want {
			t.Errorf("%q: decoded %q", s, got)
		}
	}
}

func TestSchemaNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, s := range []schema{schemaECS, schemaOCSF} {
		tee := &Tee{}
		tee.add(newStreamWriter("sink test", io.Discard), s, Options{Host: "web-1", Version: "1"})
		evs := benchEvents()
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
