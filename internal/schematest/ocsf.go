package schematest

import (
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// OCSF is one compiled OCSF schema, as the OCSF server loads it.
type OCSF struct {
	Version  string
	classes  map[int64]*ocsfItem
	objects  map[string]*ocsfItem
	types    map[string]*ocsfType
	profiles map[string]bool
}

type ocsfItem struct {
	Name        string               `json:"name"`
	UID         *int64               `json:"uid"`
	Attributes  map[string]*ocsfAttr `json:"attributes"`
	Constraints map[string][]string  `json:"constraints"`
	Deprecated  json.RawMessage      `json:"@deprecated"`
}

type ocsfAttr struct {
	Type        string                   `json:"type"`
	ObjectType  string                   `json:"object_type"`
	Requirement string                   `json:"requirement"`
	Sibling     string                   `json:"sibling"`
	IsArray     bool                     `json:"is_array"`
	Profiles    []string                 `json:"profiles"`
	Enum        map[string]ocsfEnumValue `json:"enum"`
	Deprecated  json.RawMessage          `json:"@deprecated"`
}

type ocsfEnumValue struct {
	Caption    string          `json:"caption"`
	Deprecated json.RawMessage `json:"@deprecated"`
}

type ocsfType struct {
	Type   string    `json:"type"`
	Regex  string    `json:"regex"`
	MaxLen *int      `json:"max_len"`
	Range  []float64 `json:"range"`
	Values []any     `json:"values"`
	regex  *regexp.Regexp
}

// LoadOCSF reads a compiled OCSF schema (JSON, optionally gzipped).
func LoadOCSF(path string) (*OCSF, error) {
	var raw struct {
		Version    string               `json:"version"`
		Classes    map[string]*ocsfItem `json:"classes"`
		Objects    map[string]*ocsfItem `json:"objects"`
		Profiles   map[string]any       `json:"profiles"`
		Dictionary struct {
			Types struct {
				Attributes map[string]*ocsfType `json:"attributes"`
			} `json:"types"`
		} `json:"dictionary"`
	}
	if err := readJSON(path, &raw); err != nil {
		return nil, err
	}
	s := &OCSF{Version: raw.Version, classes: map[int64]*ocsfItem{}, objects: raw.Objects,
		types: raw.Dictionary.Types.Attributes, profiles: map[string]bool{}}
	if s.Version == "" || len(raw.Classes) == 0 || len(s.objects) == 0 || len(s.types) == 0 {
		return nil, fmt.Errorf("read schema %s: not a compiled OCSF schema", path)
	}
	for name, c := range raw.Classes {
		if c.UID == nil {
			return nil, fmt.Errorf("read schema %s: class %s has no uid", path, name)
		}
		s.classes[*c.UID] = c
	}
	for name := range raw.Profiles {
		s.profiles[name] = true
	}
	for name, t := range s.types {
		if t.Regex == "" {
			continue
		}
		re, err := regexp.Compile(t.Regex)
		if err != nil {
			return nil, fmt.Errorf("read schema %s: type %s regex: %w", path, name, err)
		}
		t.regex = re
	}
	return s, nil
}

// Validate checks one JSON line by the OCSF server's rules.
func (s *OCSF) Validate(line []byte) []Violation {
	ev, dups, err := decodeLine(line)
	var vs violations
	if err != nil {
		vs.add("json_invalid", "", "%v", err)
		return vs
	}
	for _, p := range dups {
		vs.add("duplicate_key", p, "key repeated in its object")
	}
	cv, ok := ev["class_uid"]
	if !ok || cv == nil {
		vs.add("attribute_required_missing", "class_uid", "required attribute missing")
		return vs
	}
	uid, ok := integer(cv)
	if !ok || !uid.IsInt64() {
		vs.add("attribute_wrong_type", "class_uid", "want integer_t, got %s", typeOf(cv))
		return vs
	}
	class := s.classes[uid.Int64()]
	if class == nil {
		vs.add("class_uid_unknown", "class_uid", "no class is defined for %v", uid)
		return vs
	}
	profiles := s.eventProfiles(&vs, ev)
	if class.Deprecated != nil {
		vs.add("class_deprecated", "class_uid", "class %s is deprecated", class.Name)
	}
	s.attributes(&vs, ev, "", class, profiles)
	s.version(&vs, ev)
	typeUID(&vs, ev)
	constraints(&vs, ev, "", class)
	sortViolations(vs)
	return vs
}

// eventProfiles returns metadata.profiles, reporting unknown ones.
func (s *OCSF) eventProfiles(vs *violations, ev object) map[string]bool {
	set := map[string]bool{}
	md, _ := ev["metadata"].(object)
	list, _ := md["profiles"].([]any)
	for i, p := range list {
		name, ok := p.(string)
		if !ok {
			continue // a wrong type, reported by the attribute check
		}
		if !s.profiles[name] {
			vs.add("profile_unknown", fmt.Sprintf("metadata.profiles[%d]", i), "no profile is defined for %q", name)
		}
		set[name] = true
	}
	return set
}

// filter returns the attributes of item that apply with the event's
// profiles: those of no profile, and those of a profile it lists.
func filter(item *ocsfItem, profiles map[string]bool) map[string]*ocsfAttr {
	out := make(map[string]*ocsfAttr, len(item.Attributes))
	for name, a := range item.Attributes {
		if len(a.Profiles) == 0 || slices.ContainsFunc(a.Profiles, func(p string) bool { return profiles[p] }) {
			out[name] = a
		}
	}
	return out
}

func (s *OCSF) attributes(vs *violations, m object, parent string, item *ocsfItem, profiles map[string]bool) {
	attrs := filter(item, profiles)
	for name, a := range attrs {
		s.attribute(vs, m[name], join(parent, name), a, profiles)
	}
	// An item with no attributes ("object", the type of unmapped) takes
	// any keys.
	if len(attrs) > 0 {
		for k := range m {
			if attrs[k] == nil {
				what := "object " + item.Name
				if item.UID != nil {
					what = fmt.Sprintf("class %s uid %d", item.Name, *item.UID)
				}
				if _, inSchema := item.Attributes[k]; inSchema {
					vs.add("attribute_unknown", join(parent, k), "%q is defined in %s only under profiles %v, which metadata.profiles does not list",
						k, what, item.Attributes[k].Profiles)
				} else {
					vs.add("attribute_unknown", join(parent, k), "%q is not defined in %s", k, what)
				}
			}
		}
	}
	for name, a := range attrs {
		if a.Enum == nil {
			continue
		}
		v, present := m[name]
		if !present {
			continue
		}
		if a.IsArray {
			list, _ := v.([]any)
			for i, e := range list {
				enumValue(vs, m, parent, name, i, e, a)
			}
		} else {
			enumValue(vs, m, parent, name, -1, v, a)
		}
	}
}

// enumValue checks one value of an enum attribute and its sibling; i is
// the index in an array attribute, or -1.
func enumValue(vs *violations, m object, parent, name string, i int, v any, a *ocsfAttr) {
	path := join(parent, name)
	if i >= 0 {
		path = fmt.Sprintf("%s[%d]", path, i)
	}
	key := fmt.Sprint(v)
	if v == nil {
		key = ""
	}
	ev, ok := a.Enum[key]
	if !ok {
		vs.add("attribute_enum_value_unknown", path, "value %v is not defined for enum %q", v, name)
		return
	}
	if ev.Deprecated != nil {
		vs.add("attribute_enum_value_deprecated", path, "value %v is deprecated", v)
	}
	sib, present := m[a.Sibling]
	if a.Sibling == "" || !present {
		return
	}
	sibPath := join(parent, a.Sibling)
	if i >= 0 {
		list, _ := sib.([]any)
		if i >= len(list) {
			vs.add("attribute_enum_array_sibling_missing", sibPath, "no value for index %d", i)
			return
		}
		sib = list[i]
	}
	if key == "99" {
		if sib == ev.Caption {
			vs.add("attribute_enum_sibling_suspicious_other", sibPath, "%v is the caption of 99; 99 wants the source's own value", sib)
		}
		return
	}
	if sib != ev.Caption {
		vs.add("attribute_enum_sibling_incorrect", sibPath, "%v, but %s %v is %q", sib, path, v, ev.Caption)
	}
}

func (s *OCSF) attribute(vs *violations, v any, path string, a *ocsfAttr, profiles map[string]bool) {
	if v == nil {
		if a.Requirement == "required" {
			vs.add("attribute_required_missing", path, "required attribute missing")
		}
		return
	}
	if a.Deprecated != nil {
		vs.add("attribute_deprecated", path, "deprecated attribute")
	}
	if a.Type != "object_t" && s.types[a.Type] == nil {
		vs.add("schema_bug_type_missing", path, "type %q not in the dictionary", a.Type)
		return
	}
	if !a.IsArray {
		s.value(vs, v, path, a, profiles)
		return
	}
	list, ok := v.([]any)
	if !ok {
		vs.add("attribute_wrong_type", path, "want an array of %s, got %s", a.Type, typeOf(v))
		return
	}
	for i, e := range list {
		s.value(vs, e, fmt.Sprintf("%s[%d]", path, i), a, profiles)
	}
}

func (s *OCSF) value(vs *violations, v any, path string, a *ocsfAttr, profiles map[string]bool) {
	if a.Type == "object_t" {
		m, ok := v.(object)
		if !ok {
			vs.add("attribute_wrong_type", path, "want %s (object), got %s", a.ObjectType, typeOf(v))
			return
		}
		obj := s.objects[a.ObjectType]
		if obj == nil {
			vs.add("schema_bug_object_missing", path, "object %q not in the schema", a.ObjectType)
			return
		}
		if obj.Deprecated != nil {
			vs.add("object_deprecated", path, "object %s is deprecated", obj.Name)
		}
		s.attributes(vs, m, path, obj, profiles)
		constraints(vs, m, path, obj)
		return
	}
	t := s.types[a.Type]
	primitive, super := a.Type, (*ocsfType)(nil)
	if t.Type != "" {
		primitive, super = t.Type, s.types[t.Type]
	}
	wrong := func() {
		vs.add("attribute_wrong_type", path, "want %s (%s), got %s %v", a.Type, primitive, typeOf(v), v)
	}
	switch primitive {
	case "boolean_t":
		if _, ok := v.(bool); !ok {
			wrong()
			return
		}
	case "float_t":
		// As the server decodes JSON, 1 is an integer and only 1.0 a float.
		n, ok := v.(json.Number)
		if !ok || !strings.ContainsAny(string(n), ".eE") {
			wrong()
			return
		}
	case "integer_t", "long_t":
		n, ok := integer(v)
		if !ok || n.Cmp(limits[primitive][0]) < 0 || n.Cmp(limits[primitive][1]) > 0 {
			wrong()
			return
		}
	case "json_t":
		return
	case "string_t":
		str, ok := v.(string)
		if !ok {
			wrong()
			return
		}
		maxLen := t.MaxLen
		if maxLen == nil && super != nil {
			maxLen = super.MaxLen
		}
		if maxLen != nil && utf8.RuneCountInString(str) > *maxLen {
			vs.add("attribute_value_exceeds_max_len", path, "%d characters, more than %s allows (%d)", utf8.RuneCountInString(str), a.Type, *maxLen)
		}
		if t.regex != nil && !t.regex.MatchString(str) {
			vs.add("attribute_value_regex_not_matched", path, "%q does not match the regex of %s", str, a.Type)
		}
	default:
		vs.add("schema_bug_primitive_type_unknown", path, "primitive type %q", primitive)
		return
	}
	rng := t.Range
	if rng == nil && super != nil {
		rng = super.Range
	}
	if len(rng) == 2 {
		if n, ok := v.(json.Number); ok {
			if f, err := n.Float64(); err == nil && (f < rng[0] || f > rng[1]) {
				vs.add("attribute_value_exceeds_range", path, "%v outside %s's range %v", v, a.Type, rng)
			}
		}
	}
	values := t.Values
	if values == nil && super != nil {
		values = super.Values
	}
	if values != nil && !slices.Contains(values, v) {
		vs.add("attribute_value_not_in_type_values", path, "%v not in %s's values %v", v, a.Type, values)
	}
}

// limits are the ranges of the integer types: -2^63 to 2^63-1 and
// -2^127 to 2^127-1, as the server checks them.
var limits = map[string][2]*big.Int{
	"integer_t": {new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 63)), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 63), big.NewInt(1))},
	"long_t":    {new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 127)), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 127), big.NewInt(1))},
}

// integer returns v as an integer when it is a JSON number with no
// fraction or exponent.
func integer(v any) (*big.Int, bool) {
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(string(n), ".eE") {
		return nil, false
	}
	return new(big.Int).SetString(string(n), 10)
}

func constraints(vs *violations, m object, path string, item *ocsfItem) {
	for kind, keys := range item.Constraints {
		count := 0
		for _, k := range keys {
			if _, ok := m[k]; ok {
				count++
			}
		}
		switch kind {
		case "at_least_one":
			if count == 0 {
				vs.add("constraint_failed", path, "%s %s: at least one of %v", item.Name, kind, keys)
			}
		case "just_one":
			if count != 1 {
				vs.add("constraint_failed", path, "%s %s: exactly one of %v, got %d", item.Name, kind, keys, count)
			}
		default:
			vs.add("constraint_unknown", path, "%s: unknown constraint %s", item.Name, kind)
		}
	}
}

var versionFormat = regexp.MustCompile(`^\d+\.\d+\.\d+(?:-dev|-rc\.\d+)?$`)

func (s *OCSF) version(vs *violations, ev object) {
	md, _ := ev["metadata"].(object)
	v, ok := md["version"].(string)
	if !ok {
		return // missing or mistyped: reported by the attribute check
	}
	switch {
	case !versionFormat.MatchString(v):
		vs.add("version_invalid_format", "metadata.version", "%q is not x.y.z", v)
	case v < "1.0.0" || v > s.Version:
		vs.add("version_incompatible", "metadata.version", "%q is not a released version up to %s", v, s.Version)
	case v != s.Version:
		vs.add("version_incorrect", "metadata.version", "%q, but the schema is %s", v, s.Version)
	}
}

func typeUID(vs *violations, ev object) {
	c, ok1 := integer(ev["class_uid"])
	a, ok2 := integer(ev["activity_id"])
	t, ok3 := integer(ev["type_uid"])
	if !ok1 || !ok2 || !ok3 {
		return // reported by the attribute checks
	}
	want := new(big.Int).Add(new(big.Int).Mul(c, big.NewInt(100)), a)
	if t.Cmp(want) != 0 {
		vs.add("type_uid_incorrect", "type_uid", "%v, want class_uid %v * 100 + activity_id %v = %v", t, c, a, want)
	}
}
