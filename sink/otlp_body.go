package sink

// The body of an OTLP log record: the event's JSON line turned into the
// map (kvlistValue) of its fields, in an arena reused from request to
// request.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/slim/otlp/logs/v1"
	"go.uber.org/zap/zapcore"
)

// logRecord decodes a stored message into its LogRecord.
func (a *bodyArena) logRecord(m []byte) (*logspb.LogRecord, error) {
	if len(m) < otlpMsgHeader || len(m) < otlpMsgHeader+int(m[9]) {
		return nil, errors.New("short message")
	}
	ts := binary.LittleEndian.Uint64(m)
	lvl := zapcore.Level(int8(m[8]) - 1)
	kind := a.str(m[otlpMsgHeader : otlpMsgHeader+int(m[9])])
	body, err := a.jsonAny(m[otlpMsgHeader+int(m[9]):])
	if err != nil {
		return nil, err
	}
	sev, text := logspb.SeverityNumber_SEVERITY_NUMBER_INFO, "INFO"
	if lvl >= zapcore.WarnLevel {
		sev, text = logspb.SeverityNumber_SEVERITY_NUMBER_WARN, "WARN"
	}
	r := a.recs.next()
	r.TimeUnixNano, r.ObservedTimeUnixNano = ts, ts
	r.SeverityNumber, r.SeverityText = sev, text
	r.EventName, r.Body = kind, body
	return r, nil
}

func strKV(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// jsonAny turns an event's JSON (an object) into the body's AnyValue: an
// object becomes a kvlistValue with its keys in order, an array an
// arrayValue, a whole number an intValue (a string when beyond int64,
// so that it stays exact), other numbers a doubleValue.
//
// The parser is written here because encoding/json's token API, the only
// one that keeps the keys' order, cost about 60 µs per event (a third of
// the whole path's budget many times over); the input is the sink's own
// encoders' output, but it is checked all the same.
func jsonAny(line []byte) (*commonpb.AnyValue, error) {
	var a bodyArena
	return a.jsonAny(line)
}

func (a *bodyArena) jsonAny(line []byte) (*commonpb.AnyValue, error) {
	p := jsonParser{b: line, a: a}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return nil, errors.New("event JSON: not an object")
	}
	v, err := p.value(0)
	if err == nil {
		if p.ws(); p.i != len(p.b) {
			err = errors.New("data after the object")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("event JSON: %w", err)
	}
	return v, nil
}

type jsonParser struct {
	b []byte
	i int
	a *bodyArena
}

var errJSON = errors.New("malformed")

func (p *jsonParser) ws() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *jsonParser) value(depth int) (*commonpb.AnyValue, error) {
	if depth > 32 {
		return nil, errors.New("nested too deep")
	}
	p.ws()
	if p.i >= len(p.b) {
		return nil, io.ErrUnexpectedEOF
	}
	switch c := p.b[p.i]; {
	case c == '{':
		p.i++
		mark := len(p.a.stack)
		for first := true; ; first = false {
			p.ws()
			if p.i < len(p.b) && p.b[p.i] == '}' && first {
				p.i++
				break
			}
			k, err := p.str()
			if err != nil {
				return nil, err
			}
			if p.ws(); p.i >= len(p.b) || p.b[p.i] != ':' {
				return nil, errJSON
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			kv := p.a.kvs.next()
			kv.Key, kv.Value = k, v
			p.a.stack = append(p.a.stack, kv)
			if p.ws(); p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == '}' {
				p.i++
				break
			}
			return nil, errJSON
		}
		l := p.a.lists.next()
		l.Values = p.a.kvList(p.a.stack[mark:])
		p.a.stack = p.a.stack[:mark]
		v := p.a.avs.next()
		v.Value = &commonpb.AnyValue_KvlistValue{KvlistValue: l}
		return v, nil
	case c == '[':
		p.i++
		var vs []*commonpb.AnyValue
		for first := true; ; first = false {
			p.ws()
			if p.i < len(p.b) && p.b[p.i] == ']' && first {
				p.i++
				break
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			vs = append(vs, v)
			if p.ws(); p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == ']' {
				p.i++
				break
			}
			return nil, errJSON
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vs}}}, nil
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return p.a.strValue(s), nil
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if bytes.HasPrefix(p.b[p.i:], []byte(lit)) {
				p.i += len(lit)
				switch lit {
				case "true":
					return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}, nil
				case "false":
					return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: false}}, nil
				}
				return &commonpb.AnyValue{}, nil
			}
		}
		return nil, errJSON
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return nil, errJSON
}

// str reads a string; one with escapes or bytes that are not UTF-8 is
// decoded by encoding/json, which knows them all (they are rare in
// events).
func (p *jsonParser) str() (string, error) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", errJSON
	}
	start, esc := p.i, false
	for p.i++; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '\\':
			esc = true
			p.i++
		case c == '"':
			p.i++
			// Not UTF-8: encoding/json replaces the bad bytes, as protobuf
			// strings must be UTF-8 or the whole request fails to encode.
			if raw := p.b[start+1 : p.i-1]; !esc && utf8.Valid(raw) {
				return p.a.str(raw), nil
			}
			var s string
			if err := json.Unmarshal(p.b[start:p.i], &s); err != nil {
				return "", err
			}
			return s, nil
		case c < 0x20:
			return "", errJSON
		}
	}
	return "", io.ErrUnexpectedEOF
}

func (p *jsonParser) number() (*commonpb.AnyValue, error) {
	// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
	start, frac := p.i, false
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return nil, errJSON
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		frac = true
		if digits() == 0 {
			return nil, errJSON
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		frac = true
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, errJSON
		}
	}
	if !frac {
		if i, ok := parseInt(p.b[start:p.i]); ok {
			iv := p.a.ints.next()
			iv.IntValue = i
			v := p.a.avs.next()
			v.Value = iv
			return v, nil
		}
	}
	t := string(p.b[start:p.i])
	if !frac {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: t}}, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, errJSON
	}
	if err != nil || math.IsInf(f, 0) {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: t}}, nil
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: f}}, nil
}

// bodyArena holds the protobuf objects of one request, and is reused for
// the next once it has been marshaled: building a request then allocates
// little beyond the strings it has not seen before (keys and most values
// repeat from event to event).
type bodyArena struct {
	recs   slab[logspb.LogRecord]
	kvs    slab[commonpb.KeyValue]
	avs    slab[commonpb.AnyValue]
	strs   slab[commonpb.AnyValue_StringValue]
	ints   slab[commonpb.AnyValue_IntValue]
	lists  slab[commonpb.KeyValueList]
	ptrs   []*commonpb.KeyValue // backing of the objects' entry lists
	stack  []*commonpb.KeyValue // entries of the objects being parsed
	intern map[string]string
}

// maxInterned bounds the strings kept for reuse (addresses and ports
// vary without end; the cache must not).
const maxInterned = 16 << 10

func (a *bodyArena) reset() {
	a.recs.reset()
	a.kvs.reset()
	a.avs.reset()
	a.strs.reset()
	a.ints.reset()
	a.lists.reset()
	a.ptrs = a.ptrs[:0]
}

// str returns b as a string, the same one each time while it is cached.
func (a *bodyArena) str(b []byte) string {
	if len(b) > 64 {
		return string(b)
	}
	if s, ok := a.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if a.intern == nil {
		a.intern = make(map[string]string, 1024)
	}
	if len(a.intern) < maxInterned {
		a.intern[s] = s
	}
	return s
}

func (a *bodyArena) strValue(s string) *commonpb.AnyValue {
	sv := a.strs.next()
	sv.StringValue = s
	v := a.avs.next()
	v.Value = sv
	return v
}

// kvList copies an object's entries into the arena's backing array.
func (a *bodyArena) kvList(kvs []*commonpb.KeyValue) []*commonpb.KeyValue {
	if len(a.ptrs)+len(kvs) > cap(a.ptrs) {
		// The old backing stays referenced by the lists made from it.
		a.ptrs = make([]*commonpb.KeyValue, 0, max(4096, 2*len(kvs)))
	}
	start := len(a.ptrs)
	a.ptrs = append(a.ptrs, kvs...)
	return a.ptrs[start:len(a.ptrs):len(a.ptrs)]
}

// slab hands out zeroed T from chunks it keeps for reuse after reset.
type slab[T any] struct {
	chunks [][]T
	c, i   int
}

const slabChunk = 512

func (s *slab[T]) next() *T {
	if s.c < len(s.chunks) && s.i == slabChunk {
		s.c, s.i = s.c+1, 0
	}
	if s.c == len(s.chunks) {
		s.chunks = append(s.chunks, make([]T, slabChunk))
	}
	p := &s.chunks[s.c][s.i]
	s.i++
	var zero T
	*p = zero
	return p
}

func (s *slab[T]) reset() { s.c, s.i = 0, 0 }

// parseInt parses a JSON integer already checked by the grammar; false
// when it does not fit an int64.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		u = u*10 + uint64(c-'0')
	}
	switch {
	case neg && u <= 1<<63:
		return int64(-u), true
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}
