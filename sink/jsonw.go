package sink

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// jsonObj appends one JSON object to a byte slice, key by key. The ECS
// and OCSF documents are nested, which zap's flat field model expresses
// only through an allocation per nested object; appending by hand costs
// nothing but the bytes. Keys are the callers' constants and are written
// as they are; values are escaped.
type jsonObj struct {
	b     []byte
	comma bool // the current object already has a member
}

func (j *jsonObj) begin()  { j.b = append(j.b, '{'); j.comma = false }
func (j *jsonObj) finish() { j.b = append(j.b, '}'); j.comma = true }

func (j *jsonObj) key(k string) {
	if j.comma {
		j.b = append(j.b, ',')
	}
	j.b = append(j.b, '"')
	j.b = append(j.b, k...)
	j.b = append(j.b, '"', ':')
	j.comma = true
}

// object opens a nested object; close it with finish.
func (j *jsonObj) object(k string) { j.key(k); j.begin() }

func (j *jsonObj) str(k, v string) { j.key(k); j.b = appendJSONString(j.b, v) }

func (j *jsonObj) strBytes(k string, v []byte) { j.key(k); j.b = appendJSONBytes(j.b, v) }

func (j *jsonObj) uint(k string, v uint64) { j.key(k); j.b = strconv.AppendUint(j.b, v, 10) }

// uintString writes v as a decimal string: for identifiers (uids,
// cookies) that schemas type as keywords, or that exceed what JSON
// readers hold exactly.
func (j *jsonObj) uintString(k string, v uint64) {
	j.key(k)
	j.b = append(j.b, '"')
	j.b = strconv.AppendUint(j.b, v, 10)
	j.b = append(j.b, '"')
}

func (j *jsonObj) int(k string, v int64) { j.key(k); j.b = strconv.AppendInt(j.b, v, 10) }

func (j *jsonObj) boolean(k string, v bool) { j.key(k); j.b = strconv.AppendBool(j.b, v) }

// strs writes an array of strings. The arguments are constants, and the
// variadic slice does not escape, so this does not allocate.
func (j *jsonObj) strs(k string, vs ...string) {
	j.key(k)
	j.b = append(j.b, '[')
	for i, v := range vs {
		if i > 0 {
			j.b = append(j.b, ',')
		}
		j.b = appendJSONString(j.b, v)
	}
	j.b = append(j.b, ']')
}

// timestamp writes t in UTC as RFC 3339 with nine fractional digits, the
// native schema's fixed-width form.
func (j *jsonObj) timestamp(k string, t time.Time) {
	j.key(k)
	j.b = append(j.b, '"')
	j.b = t.UTC().AppendFormat(j.b, tsLayout)
	j.b = append(j.b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does, without its HTML
// escaping: control characters as \uXXXX (or \n, \r, \t), invalid UTF-8
// as U+FFFD, and U+2028/U+2029 escaped for JavaScript readers.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONBody(b, s)
	return append(b, '"')
}

// appendJSONBody escapes s without the quotes.
func appendJSONBody(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// appendJSONBytes quotes text that is known to be plain ASCII (addresses
// formatted by netip, base64), so it needs no escaping.
func appendJSONBytes(b, v []byte) []byte {
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}
