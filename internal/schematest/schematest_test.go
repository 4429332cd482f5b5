package schematest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestCommunityIDVectors(t *testing.T) {
	vs, err := Vectors(Dir(t))
	if err != nil {
		t.Fatal(err)
	}
	checked, icmp := 0, 0
	for _, v := range vs {
		if !v.PortBased() {
			icmp++
			continue
		}
		s, d := v.Addrs()
		if got := CommunityID(v.Seed, v.Proto, s, d, v.Sport, v.Dport, v.Base64); got != v.CommunityID {
			t.Errorf("%s %d %s:%d -> %s:%d seed %d: %s, want %s", v.Table, v.Proto, v.Saddr, v.Sport, v.Daddr, v.Dport, v.Seed, got, v.CommunityID)
		}
		checked++
	}
	// 48 table rows and 3 baseline files of 23 rows: 42 TCP, UDP and
	// SCTP rows in all.
	if checked != 42 || icmp == 0 {
		t.Fatalf("checked %d port-based vectors, skipped %d ICMP ones: the files are not what they were", checked, icmp)
	}
}

// fault is a planted fault: an edit of a valid document and the
// violation it must produce.
type fault struct {
	name string
	edit func(m object)
	kind string
	path string
}

func set(path string, v any) func(object) {
	return func(m object) {
		keys := strings.Split(path, ".")
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(object)
			if !ok {
				next = object{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = v
	}
}

func del(path string) func(object) {
	return func(m object) {
		keys := strings.Split(path, ".")
		for _, k := range keys[:len(keys)-1] {
			m = m[k].(object)
		}
		delete(m, keys[len(keys)-1])
	}
}

func both(a, b func(object)) func(object) { return func(m object) { a(m); b(m) } }

// plant checks that valid has no violation and that each fault yields
// its violation.
func plant(t *testing.T, validate func([]byte) []Violation, valid string, faults []fault) {
	t.Helper()
	if vs := validate([]byte(valid)); len(vs) != 0 {
		t.Fatalf("valid document: %v", vs)
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			m, _, err := decodeLine([]byte(valid))
			if err != nil {
				t.Fatal(err)
			}
			f.edit(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			vs := validate(b)
			for _, v := range vs {
				if v.Kind == f.kind && v.Path == f.path {
					return
				}
			}
			t.Errorf("want %s at %s, got %v\n%s", f.kind, f.path, vs, b)
		})
	}
}

const validECS = `{"@timestamp":"2026-12-06T22:00:00.123456789Z","ecs":{"version":"8.11.0"},
"event":{"kind":"event","category":["network"],"type":["connection","start"],"action":"appeared","id":"abc","outcome":"failure","duration":5},
"source":{"ip":"10.0.0.1","port":40000,"bytes":10,"mac":"00-11-22-33-44-55"},"destination":{"ip":"::1","port":22},
"network":{"transport":"tcp","type":"ipv4","iana_number":"6","direction":"egress","community_id":"1:x"},
"process":{"pid":42,"user":{"id":"0"}},"related":{"ip":["10.0.0.1"]},
"connlogd":{"state":"established","cookie":"1"}}`

func TestECSFaults(t *testing.T) {
	s := LoadedECS(t).WithCustom("connlogd")
	plant(t, s.Validate, validECS, []fault{
		{"unknown field", set("network.flavour", "x"), "field_unknown", "network.flavour"},
		{"unknown top level", set("connlog", object{"a": "b"}), "field_unknown", "connlog"},
		{"field set as a leaf", set("source", "10.0.0.1"), "wrong_type", "source"},
		{"long as string", set("source.port", "40000"), "wrong_type", "source.port"},
		{"long as float", set("source.port", json.Number("1.5")), "wrong_type", "source.port"},
		{"long beyond int64", set("source.bytes", json.Number("18446744073709551615")), "wrong_type", "source.bytes"},
		{"keyword as number", set("network.iana_number", json.Number("6")), "wrong_type", "network.iana_number"},
		{"ip not an address", set("destination.ip", "localhost"), "wrong_type", "destination.ip"},
		{"date not RFC 3339", set("@timestamp", "06/12/2026"), "wrong_type", "@timestamp"},
		{"normalize array", set("event.category", "network"), "normalize_array", "event.category"},
		{"single value as array", set("source.ip", []any{"10.0.0.1"}), "not_array", "source.ip"},
		{"kind not allowed", set("event.kind", "connection"), "value_not_allowed", "event.kind"},
		{"category not allowed", set("event.category", []any{"net"}), "value_not_allowed", "event.category"},
		{"type not allowed", set("event.type", []any{"changed"}), "value_not_allowed", "event.type"},
		{"outcome not allowed", set("event.outcome", "failed"), "value_not_allowed", "event.outcome"},
		{"type not expected for category", set("event.type", []any{"connection", "change"}), "event_type_unexpected", "event.type"},
		{"direction not expected", set("network.direction", "listen"), "value_not_expected", "network.direction"},
		{"required missing", del("@timestamp"), "required_missing", "@timestamp"},
		{"ecs.version missing", del("ecs.version"), "required_missing", "ecs.version"},
		{"ecs.version wrong", set("ecs.version", "8.12.0"), "version_incorrect", "ecs.version"},
		{"pattern", set("source.mac", "00:11:22:33:44:55"), "pattern_mismatch", "source.mac"},
		{"null", set("event.id", nil), "wrong_type", "event.id"},
	})
	// Duplicate keys cannot be planted through a map.
	dup := strings.Replace(validECS, `"action":"appeared"`, `"action":"appeared","action":"closed"`, 1)
	if vs := s.Validate([]byte(dup)); len(vs) != 1 || vs[0].Kind != "duplicate_key" || vs[0].Path != "event.action" {
		t.Errorf("duplicate key: %v", vs)
	}
	// Without the custom namespace, connlogd.* is unknown.
	if vs := LoadedECS(t).Validate([]byte(validECS)); len(vs) == 0 || vs[0].Kind != "field_unknown" {
		t.Errorf("connlogd without WithCustom: %v", vs)
	}
}

const validOCSF = `{"activity_id":1,"activity_name":"Open","category_uid":4,"category_name":"Network Activity",
"class_uid":4001,"class_name":"Network Activity","type_uid":400101,"type_name":"Network Activity: Open",
"severity_id":1,"severity":"Informational","time":1765058400000,
"metadata":{"version":"1.3.0","uid":"x","profiles":["host"],"product":{"name":"connlogd","vendor_name":"connlogd","version":"1"}},
"device":{"hostname":"web-1","type_id":0},
"src_endpoint":{"ip":"10.0.0.1","port":40000},"dst_endpoint":{"ip":"::1","port":22},
"connection_info":{"protocol_name":"tcp","protocol_num":6,"protocol_ver_id":4,"direction_id":2,"direction":"Outbound"},
"traffic":{"bytes":10,"packets":1},
"actor":{"user":{"uid":"0"},"process":{"pid":42,"file":{"name":"sshd","path":"/usr/sbin/sshd","type_id":1}}},
"unmapped":{"anything":{"goes":1}}}`

func TestOCSFFaults(t *testing.T) {
	s := LoadedOCSF(t)
	noProfiles := set("metadata.profiles", []any{})
	plant(t, s.Validate, validOCSF, []fault{
		{"unknown attribute", set("connection_info.community_uid", "1:x"), "attribute_unknown", "connection_info.community_uid"},
		{"unknown top-level attribute", set("src", object{}), "attribute_unknown", "src"},
		{"device without the host profile", noProfiles, "attribute_unknown", "device"},
		{"actor without the host profile", noProfiles, "attribute_unknown", "actor"},
		{"container without its profile", set("src_endpoint.container", object{"uid": "c"}), "attribute_unknown", "src_endpoint.container"},
		{"unknown profile", set("metadata.profiles", []any{"host", "hots"}), "profile_unknown", "metadata.profiles[1]"},
		{"profiles not an array", set("metadata.profiles", "host"), "attribute_wrong_type", "metadata.profiles"},
		{"required missing", del("dst_endpoint"), "attribute_required_missing", "dst_endpoint"},
		{"required missing in an object", del("connection_info.direction_id"), "attribute_required_missing", "connection_info.direction_id"},
		{"required missing in the file object", del("actor.process.file.type_id"), "attribute_required_missing", "actor.process.file.type_id"},
		{"integer as string", set("src_endpoint.port", "40000"), "attribute_wrong_type", "src_endpoint.port"},
		{"integer as float", set("severity_id", json.Number("1.0")), "attribute_wrong_type", "severity_id"},
		{"integer beyond int64", set("connection_info.protocol_num", json.Number("9223372036854775808")), "attribute_wrong_type", "connection_info.protocol_num"},
		{"string as number", set("actor.user.uid", json.Number("0")), "attribute_wrong_type", "actor.user.uid"},
		{"object as string", set("traffic", "10"), "attribute_wrong_type", "traffic"},
		{"port out of range", set("dst_endpoint.port", json.Number("70000")), "attribute_value_exceeds_range", "dst_endpoint.port"},
		{"ip regex", set("dst_endpoint.ip", "localhost"), "attribute_value_regex_not_matched", "dst_endpoint.ip"},
		{"hostname regex", set("device.hostname", "web_1!"), "attribute_value_regex_not_matched", "device.hostname"},
		{"enum value unknown", set("activity_id", json.Number("8")), "attribute_enum_value_unknown", "activity_id"},
		{"enum value unknown in an object", set("connection_info.direction_id", json.Number("5")), "attribute_enum_value_unknown", "connection_info.direction_id"},
		{"sibling incorrect", set("activity_name", "Listen"), "attribute_enum_sibling_incorrect", "activity_name"},
		{"type_name incorrect", both(set("activity_id", json.Number("99")), both(set("type_uid", json.Number("400199")), set("type_name", "Network Activity: State Changed"))),
			"attribute_enum_sibling_incorrect", "type_name"},
		{"99 with the caption Other", both(set("connection_info.direction_id", json.Number("99")), set("connection_info.direction", "Other")),
			"attribute_enum_sibling_suspicious_other", "connection_info.direction"},
		{"type_uid incorrect", both(set("activity_id", json.Number("2")), set("activity_name", "Close")), "type_uid_incorrect", "type_uid"},
		{"class unknown", set("class_uid", json.Number("4999")), "class_uid_unknown", "class_uid"},
		{"class missing", del("class_uid"), "attribute_required_missing", "class_uid"},
		{"class mistyped", set("class_uid", "4001"), "attribute_wrong_type", "class_uid"},
		{"category not the class's", set("category_uid", json.Number("0")), "attribute_enum_value_unknown", "category_uid"},
		{"version incorrect", set("metadata.version", "1.2.0"), "version_incorrect", "metadata.version"},
		{"version unreleased", set("metadata.version", "1.4.0"), "version_incompatible", "metadata.version"},
		{"version format", set("metadata.version", "1.3"), "version_invalid_format", "metadata.version"},
		{"endpoint constraint", del("src_endpoint.ip"), "constraint_failed", "src_endpoint"},
		{"actor constraint", both(del("actor.user"), del("actor.process")), "constraint_failed", "actor"},
		{"base event has no device", both(set("class_uid", json.Number("0")), both(set("category_uid", json.Number("0")), both(set("type_uid", json.Number("99")), set("activity_id", json.Number("99"))))),
			"attribute_unknown", "device"},
	})
	dup := strings.Replace(validOCSF, `"time":1765058400000`, `"time":1765058400000,"time":1`, 1)
	if vs := s.Validate([]byte(dup)); len(vs) != 1 || vs[0].Kind != "duplicate_key" || vs[0].Path != "time" {
		t.Errorf("duplicate key: %v", vs)
	}
	if vs := s.Validate([]byte(`{"class_uid":4001`)); len(vs) != 1 || vs[0].Kind != "json_invalid" {
		t.Errorf("truncated line: %v", vs)
	}
}

// Example shows how a caller reports violations: one line each.
func Example() {
	fmt.Println(Violation{Kind: "attribute_unknown", Path: "device", Msg: "..."})
	// Output: attribute_unknown at device: ...
}
