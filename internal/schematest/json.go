package schematest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// object is a decoded JSON object; values are map[string]any, []any,
// json.Number, string, bool or nil.
type object = map[string]any

// decodeLine decodes one JSON object strictly: numbers stay json.Number
// (so that 1 and 1.0 and 2^64 are told apart), and a key repeated in an
// object is reported in dups by its path.
func decodeLine(line []byte) (object, []string, error) {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var dups []string
	v, err := decodeValue(d, "", &dups)
	if err != nil {
		return nil, nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("trailing data after the object")
	}
	m, ok := v.(object)
	if !ok {
		return nil, nil, fmt.Errorf("not a JSON object")
	}
	return m, dups, nil
}

func decodeValue(d *json.Decoder, path string, dups *[]string) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch tok := tok.(type) {
	case json.Delim:
		switch tok {
		case '{':
			m := object{}
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, err
				}
				k := kt.(string)
				p := join(path, k)
				v, err := decodeValue(d, p, dups)
				if err != nil {
					return nil, err
				}
				if _, dup := m[k]; dup {
					*dups = append(*dups, p)
				}
				m[k] = v
			}
			_, err := d.Token() // '}'
			return m, err
		case '[':
			a := []any{}
			for i := 0; d.More(); i++ {
				v, err := decodeValue(d, fmt.Sprintf("%s[%d]", path, i), dups)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := d.Token() // ']'
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", tok)
	default:
		return tok, nil
	}
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// Violation is one breach of a schema in one event.
type Violation struct {
	// Kind names the rule, e.g. "attribute_unknown" (OCSF's names where
	// the OCSF server has one).
	Kind string
	Path string // the attribute or field, dotted
	Msg  string
}

func (v Violation) String() string {
	return v.Kind + " at " + v.Path + ": " + v.Msg
}

type violations []Violation

func (vs *violations) add(kind, path, format string, args ...any) {
	*vs = append(*vs, Violation{Kind: kind, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// typeOf names a decoded JSON value's type for messages.
func typeOf(v any) string {
	switch v.(type) {
	case object:
		return "object"
	case []any:
		return "array"
	case json.Number:
		return "number"
	case string:
		return "string"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// sortViolations orders vs by path and kind, so that reports compare.
func sortViolations(vs []Violation) {
	slices.SortFunc(vs, func(a, b Violation) int {
		return cmp.Or(strings.Compare(a.Path, b.Path), strings.Compare(a.Kind, b.Kind), strings.Compare(a.Msg, b.Msg))
	})
}
