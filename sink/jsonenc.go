package sink

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// lineEncoder is the sink's zapcore.Encoder: it writes, byte for byte,
// what zap's own JSON encoder (zapcore.NewJSONEncoder) writes when
// configured as the sink needs it — no entry keys (a line is its fields:
// level, time, message, caller and stack of the zapcore.Entry are not
// written), times in UTC as tsLayout, durations as integer nanoseconds,
// "\n" ending each line — in less than half the instructions (a native
// line of a short connection: 10.4k against 22.0k). FuzzLineEncoder holds
// the two to the same bytes, for events of every kind through every
// schema, and for arbitrary fields.
//
// Why not zap's: at full churn, encoding was 30 % of the daemon's CPU,
// and most of it was not writing bytes but zap's generality: every key is
// escaped like a value, rune by rune, through function values (the
// string-or-bytes appender and rune decoder of safeAppendStringLike,
// which the compiler cannot inline); every member reads back the
// buffer's last byte to decide on a comma; each line is built in a
// pooled encoder and buffer, then copied to the caller's. Here a string
// (key or value) is checked for a byte that needs escaping eight bytes
// at a time and, when none does (every key, nearly every value),
// appended at once, a member's key and value together; numbers are
// strconv.Append*; timestamps are appendTS; and the line is written
// straight into the caller's slice (appendLine). Where a string needs
// escaping, appendEscaped does what zap does (\" \\ \n \r \t, \u00XX for
// the other control bytes, \ufffd for each byte of invalid UTF-8, the
// rest as it is).
//
// Why not a library: zap (v1.28) has no faster encoder or option; the
// zapcore.Encoders published as modules are copies of zap's JSON encoder
// in forks (the same cost, and a fork to follow), and the fast JSON
// libraries (segmentio/encoding, bytedance/sonic, goccy/go-json) encode
// Go values by reflection or generated code, not zap's ObjectEncoder
// calls; none would write zap's bytes by construction.
//
// Like zap's, an encoder to which fields are added directly (as
// zap.Logger.With does) keeps them as context written into every entry,
// Clone copies them, and EncodeEntry may be called concurrently on one
// encoder. The sink's encoders have no context and call appendLine from
// one goroutine.
type lineEncoder struct {
	buf            []byte // the line being written; at the root, the context
	openNamespaces int    // namespaces opened (OpenNamespace) and not yet closed
	// comma is whether the next member or element needs a comma before
	// it: whether buf ends in a value rather than in '{', '[' or ':'.
	// zap reads buf's last byte for that; a flag is cheaper than
	// reading back what was just copied, and the same (no value ends
	// in one of those bytes, nor in ',' or ' ', the other two zap
	// looks for).
	comma bool

	reflectBuf bytes.Buffer  // AddReflected's value, as encoding/json writes it
	reflectEnc *json.Encoder // writes into reflectBuf; made on first use
}

var _ zapcore.Encoder = (*lineEncoder)(nil)

// lineBuffers hands EncodeEntry's callers zap buffers, as zap's encoder
// does (they Free them).
var lineBuffers = buffer.NewPool()

// appendLine appends to b the line of one entry whose only field is
// zap.Inline(doc): doc's members are the line's. It is EncodeEntry
// (zapcore.Entry{}, []zapcore.Field{zap.Inline(doc)}) written in place,
// for an encoder without context: no pooled encoder or buffer, no copy.
func (e *lineEncoder) appendLine(b []byte, doc zapcore.ObjectMarshaler) []byte {
	e.buf = append(b, '{')
	e.openNamespaces, e.comma = 0, false
	if err := doc.MarshalLogObject(e); err != nil {
		// As zapcore.Field.AddTo reports an inline field's error (its
		// key is empty).
		e.AddString("Error", err.Error())
	}
	e.closeOpenNamespaces()
	b = append(e.buf, '}', '\n')
	e.buf = nil
	return b
}

// EncodeEntry writes the context and the fields as one line; the entry's
// own members have no keys in this configuration and are left out.
func (e *lineEncoder) EncodeEntry(_ zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	out := lineBuffers.Get()
	final := lineEncoder{buf: append(out.Bytes()[:0], '{'), openNamespaces: e.openNamespaces}
	if len(e.buf) > 0 {
		final.buf = append(final.buf, e.buf...)
		final.comma = e.comma
	}
	for i := range fields {
		fields[i].AddTo(&final)
	}
	final.closeOpenNamespaces()
	final.buf = append(final.buf, '}', '\n')
	// out's own slice may have been outgrown: write the line into it.
	out.Reset()
	_, _ = out.Write(final.buf)
	return out, nil
}

// Clone returns an encoder with a copy of e's context.
func (e *lineEncoder) Clone() zapcore.Encoder {
	return &lineEncoder{buf: bytes.Clone(e.buf), openNamespaces: e.openNamespaces, comma: e.comma}
}

func (e *lineEncoder) closeOpenNamespaces() {
	for range e.openNamespaces {
		e.buf = append(e.buf, '}')
	}
	e.openNamespaces = 0
	e.comma = true
}

// addElementSeparator writes a comma unless the member or element is the
// first of its object or array, or follows its key; what comes next is a
// value, so the next one will need a comma.
func (e *lineEncoder) addElementSeparator() {
	if e.comma {
		e.buf = append(e.buf, ',')
	}
	e.comma = true
}

// addKey writes the key of a member; its value follows without a comma.
func (e *lineEncoder) addKey(key string) {
	b := e.buf
	if e.comma {
		b = append(b, ',')
	}
	b = appendQuoted(b, key)
	e.buf = append(b, ':')
	e.comma = false
}

// ObjectEncoder: each member is its key, then the value as the array
// element of the same type writes it.

func (e *lineEncoder) AddArray(key string, arr zapcore.ArrayMarshaler) error {
	e.addKey(key)
	return e.AppendArray(arr)
}

func (e *lineEncoder) AddObject(key string, obj zapcore.ObjectMarshaler) error {
	e.addKey(key)
	return e.AppendObject(obj)
}

func (e *lineEncoder) AddBinary(key string, val []byte) {
	e.addKey(key)
	e.addElementSeparator()
	// Base64 needs no escaping.
	e.buf = append(e.buf, '"')
	e.buf = base64.StdEncoding.AppendEncode(e.buf, val)
	e.buf = append(e.buf, '"')
}

func (e *lineEncoder) AddByteString(key string, val []byte) {
	if !addPlainMember(e, key, val) {
		e.addKey(key)
		e.AppendByteString(val)
	}
}

func (e *lineEncoder) AddBool(key string, val bool) {
	e.addKey(key)
	e.AppendBool(val)
}

func (e *lineEncoder) AddComplex128(key string, val complex128) {
	e.addKey(key)
	e.AppendComplex128(val)
}

func (e *lineEncoder) AddComplex64(key string, val complex64) {
	e.addKey(key)
	e.AppendComplex64(val)
}

func (e *lineEncoder) AddDuration(key string, val time.Duration) {
	e.addKey(key)
	e.AppendDuration(val)
}

func (e *lineEncoder) AddFloat64(key string, val float64) {
	e.addKey(key)
	e.AppendFloat64(val)
}

func (e *lineEncoder) AddFloat32(key string, val float32) {
	e.addKey(key)
	e.AppendFloat32(val)
}

func (e *lineEncoder) AddInt64(key string, val int64) {
	e.addKey(key)
	e.AppendInt64(val)
}

func (e *lineEncoder) AddString(key, val string) {
	if !addPlainMember(e, key, val) {
		e.addKey(key)
		e.AppendString(val)
	}
}

// addPlainMember writes a member whose key and string value need no
// escaping, if they need none (nearly always), in one go.
func addPlainMember[S string | []byte](e *lineEncoder, key string, val S) bool {
	if !plain(key) || !plain(val) {
		return false
	}
	b := e.buf
	if e.comma {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, '"', ':', '"')
	b = append(b, val...)
	e.buf = append(b, '"')
	e.comma = true
	return true
}

func (e *lineEncoder) AddTime(key string, val time.Time) {
	e.addKey(key)
	e.AppendTime(val)
}

func (e *lineEncoder) AddUint64(key string, val uint64) {
	e.addKey(key)
	e.buf = strconv.AppendUint(e.buf, val, 10)
	e.comma = true
}

// AddReflected writes val as encoding/json does, without HTML escaping;
// on an error it writes nothing, not even the key.
func (e *lineEncoder) AddReflected(key string, val any) error {
	v, err := e.encodeReflected(val)
	if err != nil {
		return err
	}
	e.addKey(key)
	e.buf = append(e.buf, v...)
	e.comma = true
	return nil
}

// OpenNamespace opens an object that the members after it go into, up
// to the end of the enclosing object (or of the line).
func (e *lineEncoder) OpenNamespace(key string) {
	e.addKey(key)
	e.buf = append(e.buf, '{')
	e.openNamespaces++
}

func (e *lineEncoder) AddInt(k string, v int)         { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt32(k string, v int32)     { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt16(k string, v int16)     { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt8(k string, v int8)       { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddUint(k string, v uint)       { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint32(k string, v uint32)   { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint16(k string, v uint16)   { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint8(k string, v uint8)     { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUintptr(k string, v uintptr) { e.AddUint64(k, uint64(v)) }

// ArrayEncoder.

func (e *lineEncoder) AppendArray(arr zapcore.ArrayMarshaler) error {
	e.addElementSeparator()
	e.buf = append(e.buf, '[')
	e.comma = false
	err := arr.MarshalLogArray(e)
	e.buf = append(e.buf, ']')
	e.comma = true
	return err
}

// AppendObject closes the namespaces opened inside obj, and only those.
func (e *lineEncoder) AppendObject(obj zapcore.ObjectMarshaler) error {
	outer := e.openNamespaces
	e.openNamespaces = 0
	e.addElementSeparator()
	e.buf = append(e.buf, '{')
	e.comma = false
	err := obj.MarshalLogObject(e)
	e.buf = append(e.buf, '}')
	e.closeOpenNamespaces() // and a comma before what follows
	e.openNamespaces = outer
	return err
}

func (e *lineEncoder) AppendBool(val bool) {
	e.addElementSeparator()
	e.buf = strconv.AppendBool(e.buf, val)
}

func (e *lineEncoder) AppendByteString(val []byte) {
	e.addElementSeparator()
	e.buf = appendQuoted(e.buf, val)
}

func (e *lineEncoder) AppendString(val string) {
	e.addElementSeparator()
	e.buf = appendQuoted(e.buf, val)
}

// appendComplex writes "re+imi" (quoted: no need to spell out NaN or
// infinities).
func (e *lineEncoder) appendComplex(val complex128, bitSize int) {
	e.addElementSeparator()
	r, i := real(val), imag(val)
	e.buf = append(e.buf, '"')
	e.buf = strconv.AppendFloat(e.buf, r, 'f', -1, bitSize)
	if i >= 0 {
		e.buf = append(e.buf, '+')
	}
	e.buf = strconv.AppendFloat(e.buf, i, 'f', -1, bitSize)
	e.buf = append(e.buf, 'i', '"')
}

// AppendDuration writes integer nanoseconds: no duration encoder is
// configured, and that is zap's fallback.
func (e *lineEncoder) AppendDuration(val time.Duration) {
	e.AppendInt64(int64(val))
}

func (e *lineEncoder) AppendInt64(val int64) {
	e.addElementSeparator()
	e.buf = strconv.AppendInt(e.buf, val, 10)
}

func (e *lineEncoder) AppendReflected(val any) error {
	v, err := e.encodeReflected(val)
	if err != nil {
		return err
	}
	e.addElementSeparator()
	e.buf = append(e.buf, v...)
	return nil
}

// AppendTime writes val in UTC as tsLayout formats it (appendTS, or the
// layout itself for years of other than four digits).
func (e *lineEncoder) AppendTime(val time.Time) {
	e.addElementSeparator()
	e.buf = append(e.buf, '"')
	var ok bool
	if e.buf, ok = appendTS(e.buf, val); !ok {
		e.buf = val.UTC().AppendFormat(e.buf, tsLayout)
	}
	e.buf = append(e.buf, '"')
}

func (e *lineEncoder) AppendUint64(val uint64) {
	e.addElementSeparator()
	e.buf = strconv.AppendUint(e.buf, val, 10)
}

// appendFloat writes a JSON number, or a string for what JSON has no
// number for.
func (e *lineEncoder) appendFloat(val float64, bitSize int) {
	e.addElementSeparator()
	switch {
	case math.IsNaN(val):
		e.buf = append(e.buf, `"NaN"`...)
	case math.IsInf(val, 1):
		e.buf = append(e.buf, `"+Inf"`...)
	case math.IsInf(val, -1):
		e.buf = append(e.buf, `"-Inf"`...)
	default:
		e.buf = strconv.AppendFloat(e.buf, val, 'f', -1, bitSize)
	}
}

func (e *lineEncoder) AppendComplex64(v complex64)   { e.appendComplex(complex128(v), 32) }
func (e *lineEncoder) AppendComplex128(v complex128) { e.appendComplex(v, 64) }
func (e *lineEncoder) AppendFloat64(v float64)       { e.appendFloat(v, 64) }
func (e *lineEncoder) AppendFloat32(v float32)       { e.appendFloat(float64(v), 32) }
func (e *lineEncoder) AppendInt(v int)               { e.AppendInt64(int64(v)) }
func (e *lineEncoder) AppendInt32(v int32)           { e.AppendInt64(int64(v)) }
func (e *lineEncoder) AppendInt16(v int16)           { e.AppendInt64(int64(v)) }
func (e *lineEncoder) AppendInt8(v int8)             { e.AppendInt64(int64(v)) }
func (e *lineEncoder) AppendUint(v uint)             { e.AppendUint64(uint64(v)) }
func (e *lineEncoder) AppendUint32(v uint32)         { e.AppendUint64(uint64(v)) }
func (e *lineEncoder) AppendUint16(v uint16)         { e.AppendUint64(uint64(v)) }
func (e *lineEncoder) AppendUint8(v uint8)           { e.AppendUint64(uint64(v)) }
func (e *lineEncoder) AppendUintptr(v uintptr)       { e.AppendUint64(uint64(v)) }

// encodeReflected returns val as encoding/json writes it without HTML
// escaping and without its newline; nil is null.
func (e *lineEncoder) encodeReflected(val any) ([]byte, error) {
	if val == nil {
		return []byte("null"), nil
	}
	e.reflectBuf.Reset()
	if e.reflectEnc == nil {
		e.reflectEnc = json.NewEncoder(&e.reflectBuf)
		e.reflectEnc.SetEscapeHTML(false)
	}
	if err := e.reflectEnc.Encode(val); err != nil {
		// Not wrapped: the caller (zapcore.Field.AddTo) writes the
		// text into the line, and zap's is encoding/json's alone.
		return nil, err
	}
	return bytes.TrimSuffix(e.reflectBuf.Bytes(), []byte{'\n'}), nil
}

// escapes marks the bytes a string cannot be copied over with: control
// bytes, the quote and the backslash are escaped, and bytes from 0x80 on
// start a rune to check (valid UTF-8 is copied as it is).
var escapes = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf
	}
	return t
}()

// appendQuoted appends s as a JSON string: at once when no byte of it
// needs a look (every key, nearly every value), else through
// appendEscaped.
func appendQuoted[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	if plain(s) {
		b = append(b, s...)
	} else {
		b = appendEscaped(b, s, 0)
	}
	return append(b, '"')
}

// plain reports whether no byte of s is in escapes. It reads s eight
// bytes at a time (the last eight, or for 4 to 7 bytes the first and last
// four, overlapping), as a byte loop over keys of a few letters would
// cost more than the rest of writing them.
func plain[S string | []byte](s S) bool {
	n := len(s)
	switch {
	case n >= 8:
		for i := 0; i < n-8; i += 8 {
			if !plain8(load64(s, i)) {
				return false
			}
		}
		return plain8(load64(s, n-8))
	case n >= 4:
		return plain8(uint64(load32(s, 0)) | uint64(load32(s, n-4))<<32)
	}
	for i := range n {
		if escapes[s[i]] {
			return false
		}
	}
	return true
}

// plain8 reports whether none of the eight bytes of w is in escapes: no
// byte from 0x80 on (w's high bits), none below 0x20 (subtracting 0x20
// from such a byte sets its high bit), none equal to '"' or '\\' (x^c is
// then 0, and 0-1 sets the high bit). With no high bit set in w, a high
// bit of the differences comes from such a byte, or from the borrow of
// one below it: never from a byte alone that needs nothing.
func plain8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote, backslash := w^('"'*ones), w^('\\'*ones)
	return (w|(w-0x20*ones)|(quote-ones)|(backslash-ones))&highs == 0
}

// load64 and load32 read bytes i on of s, little-endian (one load each).
func load64[S string | []byte](s S, i int) uint64 {
	_ = s[i+7]
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}

func load32[S string | []byte](s S, i int) uint32 {
	_ = s[i+3]
	return uint32(s[i]) | uint32(s[i+1])<<8 | uint32(s[i+2])<<16 | uint32(s[i+3])<<24
}

// appendEscaped appends s, escaped as zap escapes it (safeAppendStringLike),
// given that the bytes before i need nothing.
func appendEscaped[S string | []byte](b []byte, s S, i int) []byte {
	last := 0
	for i < len(s) {
		c := s[i]
		if c >= utf8.RuneSelf {
			if r, size := decodeRune(s[i:]); r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			// Invalid UTF-8: one replacement character for each byte.
			b = append(b, s[last:i]...)
			b = append(b, `\ufffd`...)
			i++
			last = i
			continue
		}
		if !escapes[c] {
			i++
			continue
		}
		b = append(b, s[last:i]...)
		switch c {
		case '\\', '"':
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
		last = i
	}
	return append(b, s[last:]...)
}

const hexDigits = "0123456789abcdef"

// decodeRune is utf8.DecodeRune for a string or bytes, without copying.
func decodeRune[S string | []byte](s S) (rune, int) {
	switch s := any(s).(type) {
	case string:
		return utf8.DecodeRuneInString(s)
	case []byte:
		return utf8.DecodeRune(s)
	}
	panic("unreachable")
}
