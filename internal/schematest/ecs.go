package schematest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ECS is the Elastic Common Schema of one ecs_flat file.
type ECS struct {
	Version string
	fields  map[string]*ecsField
	// inner holds every proper prefix of a field name ("source",
	// "process.user"): the objects a document may contain.
	inner map[string]bool
	// custom are the top-level names outside ECS the caller allows.
	custom map[string]bool
	// eventTypes maps each event.category to its expected_event_types.
	eventTypes map[string][]string
	required   []string
}

type ecsField struct {
	Name           string       `json:"flat_name"`
	Type           string       `json:"type"`
	Normalize      []string     `json:"normalize"`
	Required       bool         `json:"required"`
	Pattern        string       `json:"pattern"`
	ExpectedValues []string     `json:"expected_values"`
	AllowedValues  []ecsAllowed `json:"allowed_values"`
	pattern        *regexp.Regexp
}

type ecsAllowed struct {
	Name               string   `json:"name"`
	ExpectedEventTypes []string `json:"expected_event_types"`
}

// LoadECS reads an ecs_flat file (JSON, optionally gzipped).
func LoadECS(path string) (*ECS, error) {
	var flat map[string]*ecsField
	if err := readJSON(path, &flat); err != nil {
		return nil, err
	}
	// The file does not say its version; its name does (ecs_flat-8.11.0.json.gz).
	version := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".gz"), ".json")
	version = strings.TrimPrefix(version, "ecs_flat-")
	s := &ECS{Version: version, fields: flat, inner: map[string]bool{}, custom: map[string]bool{}, eventTypes: map[string][]string{}}
	for name, f := range flat {
		if f.Name != name || f.Type == "" {
			return nil, fmt.Errorf("read schema %s: field %q malformed", path, name)
		}
		for i := range name {
			if name[i] == '.' {
				s.inner[name[:i]] = true
			}
		}
		if f.Pattern != "" {
			re, err := regexp.Compile(f.Pattern)
			if err != nil {
				return nil, fmt.Errorf("read schema %s: %s pattern: %w", path, name, err)
			}
			f.pattern = re
		}
		if f.Required {
			s.required = append(s.required, name)
		}
	}
	cat := flat["event.category"]
	if cat == nil || len(cat.AllowedValues) == 0 {
		return nil, fmt.Errorf("read schema %s: no event.category values", path)
	}
	for _, v := range cat.AllowedValues {
		s.eventTypes[v.Name] = v.ExpectedEventTypes
	}
	slices.Sort(s.required)
	return s, nil
}

// WithCustom returns a copy of s that accepts any field under the given
// top-level names (a producer's own namespace, which ECS allows when it
// does not collide with an ECS field set).
func (s *ECS) WithCustom(names ...string) *ECS {
	c := *s
	c.custom = map[string]bool{}
	for _, n := range names {
		c.custom[n] = true
	}
	return &c
}

// Validate checks one JSON line.
func (s *ECS) Validate(line []byte) []Violation {
	doc, dups, err := decodeLine(line)
	var vs violations
	if err != nil {
		vs.add("json_invalid", "", "%v", err)
		return vs
	}
	for _, p := range dups {
		vs.add("duplicate_key", p, "key repeated in its object")
	}
	s.walk(&vs, doc, "")
	for _, name := range s.required {
		if _, ok := lookup(doc, name); !ok {
			vs.add("required_missing", name, "required field missing")
		}
	}
	if v, ok := lookup(doc, "ecs.version"); ok && v != s.Version {
		vs.add("version_incorrect", "ecs.version", "%v, but the schema is %s", v, s.Version)
	}
	s.eventTypePairs(&vs, doc)
	sortViolations(vs)
	return vs
}

// lookup finds a dotted name in doc, where the document may nest it as
// objects or, as ECS allows, hold a dotted key ("@timestamp" has none).
func lookup(doc object, name string) (any, bool) {
	if v, ok := doc[name]; ok {
		return v, true
	}
	head, rest, found := strings.Cut(name, ".")
	if !found {
		return nil, false
	}
	sub, ok := doc[head].(object)
	if !ok {
		return nil, false
	}
	return lookup(sub, rest)
}

func (s *ECS) walk(vs *violations, m object, parent string) {
	for k, v := range m {
		path := join(parent, k)
		if parent == "" {
			top, _, _ := strings.Cut(k, ".")
			if s.custom[top] {
				continue
			}
		}
		if f := s.fields[path]; f != nil {
			s.checkField(vs, f, path, v)
			continue
		}
		if s.inner[path] {
			if sub, ok := v.(object); ok {
				s.walk(vs, sub, path)
			} else {
				vs.add("wrong_type", path, "an ECS field set: want an object, got %s", typeOf(v))
			}
			continue
		}
		vs.add("field_unknown", path, "not an ECS %s field", s.Version)
	}
}

func (s *ECS) checkField(vs *violations, f *ecsField, path string, v any) {
	if v == nil {
		vs.add("wrong_type", path, "null value")
		return
	}
	arr, isArr := v.([]any)
	wantArr := slices.Contains(f.Normalize, "array")
	switch {
	case wantArr && !isArr:
		vs.add("normalize_array", path, "normalize: array, but the value is a single %s", typeOf(v))
		arr = []any{v}
	case !wantArr && isArr && f.Type != "nested":
		vs.add("not_array", path, "an array for a single-valued %s field", f.Type)
	case !isArr:
		arr = []any{v}
	}
	if f.Type == "nested" {
		if !isArr {
			vs.add("wrong_type", path, "nested: want an array of objects, got %s", typeOf(v))
		}
		return
	}
	for _, e := range arr {
		s.checkValue(vs, f, path, e)
	}
}

func (s *ECS) checkValue(vs *violations, f *ecsField, path string, v any) {
	bad := func(want string) {
		vs.add("wrong_type", path, "%s field: want %s, got %s %v", f.Type, want, typeOf(v), v)
	}
	str, isStr := v.(string)
	switch f.Type {
	case "keyword", "constant_keyword", "wildcard", "match_only_text", "text":
		if !isStr {
			bad("a string")
			return
		}
	case "long":
		n, ok := v.(json.Number)
		if !ok {
			bad("an integer")
			return
		}
		if _, err := n.Int64(); err != nil {
			bad("an integer within a signed 64-bit long")
		}
	case "float", "scaled_float", "half_float", "double":
		n, ok := v.(json.Number)
		if !ok {
			bad("a number")
			return
		}
		if _, err := n.Float64(); err != nil {
			bad("a number")
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("true or false")
		}
	case "date":
		switch v := v.(type) {
		case string:
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				bad("an RFC 3339 date")
			}
		case json.Number:
			if _, err := v.Int64(); err != nil {
				bad("epoch milliseconds")
			}
		default:
			bad("a date")
		}
	case "ip":
		if !isStr {
			bad("an IP address string")
			return
		}
		if _, err := netip.ParseAddr(str); err != nil || strings.Contains(str, "%") {
			bad("an IP address")
		}
	case "object", "flattened":
		if _, ok := v.(object); !ok {
			bad("an object")
		}
		return
	case "geo_point":
		return
	default:
		vs.add("schema_type_unknown", path, "type %q not handled by the validator", f.Type)
		return
	}
	if !isStr {
		return
	}
	if len(f.AllowedValues) > 0 && !slices.ContainsFunc(f.AllowedValues, func(a ecsAllowed) bool { return a.Name == str }) {
		vs.add("value_not_allowed", path, "%q is not one of its allowed values", str)
	}
	if len(f.ExpectedValues) > 0 && !slices.Contains(f.ExpectedValues, str) {
		vs.add("value_not_expected", path, "%q is not one of its expected values %v", str, f.ExpectedValues)
	}
	if f.pattern != nil && !f.pattern.MatchString(str) {
		vs.add("pattern_mismatch", path, "%q does not match %s", str, f.pattern)
	}
}

// eventTypePairs checks that every event.type is expected for every
// event.category of the event (ECS's categorization rule).
func (s *ECS) eventTypePairs(vs *violations, doc object) {
	cats := strings1(lookup(doc, "event.category"))
	types := strings1(lookup(doc, "event.type"))
	for _, c := range cats {
		expected, ok := s.eventTypes[c]
		if !ok {
			continue // reported as not allowed
		}
		for _, t := range types {
			if !slices.Contains(expected, t) {
				vs.add("event_type_unexpected", "event.type", "%q is not an expected type of event.category %q (expected %v)", t, c, expected)
			}
		}
	}
}

// strings1 returns the strings of a value that is a string or an array.
func strings1(v any, ok bool) []string {
	if !ok {
		return nil
	}
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
