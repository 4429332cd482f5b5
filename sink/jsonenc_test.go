package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// zapJSON is zap's own JSON encoder, configured as the sink used it
// before lineEncoder: no entry keys, times in UTC as tsLayout, "\n"
// after each line. lineEncoder must write exactly its bytes.
func zapJSON() zapcore.Encoder {
	layout := zapcore.TimeEncoderOfLayout(tsLayout)
	return zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		EncodeTime: func(t time.Time, enc zapcore.PrimitiveArrayEncoder) { layout(t.UTC(), enc) },
		LineEnding: "\n",
	})
}

// FuzzLineEncoder holds lineEncoder to zap's JSON encoder, byte for
// byte. The input draws (1) events of every kind — gaps, owners,
// containers, cgroups, namespaces, both families, strings that need
// escaping or are not UTF-8, numbers to their limits, times beyond four
// digits of year — written by each schema's encoder through either
// encoder, and (2) arbitrary zap fields of every type, nested objects,
// arrays and namespaces, marshalers that fail, and context fields added
// to the encoder itself, written through EncodeEntry and appendLine.
// CI runs it briefly; the seeds and TestLineEncoderRandom run in every
// test run.
func FuzzLineEncoder(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte("\xff\xfe\xfd\xfc\x80\x81\x7f\x22\x5c\x0a\x0d\x09 \"quote\" \\back\\ \xc3\xa9\xe2\x80\xa8"))
	f.Add(bytes.Repeat([]byte{0xff}, 300))
	rng := rand.New(rand.NewPCG(7, 11))
	for range 16 {
		b := make([]byte, 64+rng.IntN(512))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.Add(b)
	}
	f.Fuzz(checkLineEncoder)
}

// TestLineEncoderRandom is FuzzLineEncoder over a few thousand random
// inputs, in every test run.
func TestLineEncoderRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for range n {
		b := make([]byte, rng.IntN(1024))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		checkLineEncoder(t, b)
		if t.Failed() {
			t.Fatalf("input %q", b)
		}
	}
}

func checkLineEncoder(t *testing.T, data []byte) {
	d := &draw{b: data}
	checkSchemas(t, d)
	checkFields(t, d)
}

// checkSchemas writes a few events through each schema's encoder, once
// with lineEncoder and once with zap's, and compares the lines. The
// events are written in sequence to one encoder of each, as a Tee does
// (the native encoder keeps the last flow's Community ID).
func checkSchemas(t *testing.T, d *draw) {
	evs := make([]event.Event, 1+d.intn(4))
	for i := range evs {
		evs[i] = d.event()
		// Now and then the same flow again, or its other end.
		if i > 0 && d.intn(3) == 0 {
			evs[i].Socket.Key = evs[i-1].Socket.Key
			if d.intn(2) == 0 {
				evs[i].Socket.Src, evs[i].Socket.Dst = evs[i].Socket.Dst, evs[i].Socket.Src
			}
		}
	}
	host, version := d.str(), d.str()
	for s := range numSchemas {
		ours := newSchemaEncoder(s, host, version)
		ref := newSchemaEncoder(s, host, version)
		setJSONWriter(t, ref, jsonWriter{enc: zapJSON()})
		var got, want []byte
		for i := range evs {
			var err error
			if got, err = ours.encode(got[:0], &evs[i]); err != nil {
				t.Fatal(err)
			}
			if want, err = ref.encode(want[:0], &evs[i]); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("schema %d, event %+v:\nlineEncoder %s\nzap         %s", s, evs[i], got, want)
			}
		}
	}
}

// setJSONWriter gives a schema encoder another writer.
func setJSONWriter(t *testing.T, enc encoder, w jsonWriter) {
	switch e := enc.(type) {
	case *nativeEncoder:
		e.w = w
	case *ecsEncoder:
		e.w = w
	case *ocsfEncoder:
		e.w = w
	default:
		t.Fatalf("unknown encoder %T", enc)
	}
}

// checkFields writes drawn fields, and drawn context fields, through
// both encoders' EncodeEntry, and as one inline object through
// appendLine.
func checkFields(t *testing.T, d *draw) {
	ctx := d.ops(0)
	fields := d.ops(0)
	ent := zapcore.Entry{Level: zapcore.Level(d.intn(7) - 1), Time: d.time(), LoggerName: d.str(), Message: d.str(), Stack: d.str()}

	ours, ref := zapcore.Encoder(&lineEncoder{}), zapJSON()
	for _, enc := range []zapcore.Encoder{ours, ref} {
		for _, f := range ctx.fields() {
			f.AddTo(enc)
		}
	}
	entryOf := func(enc zapcore.Encoder) string {
		buf, err := enc.EncodeEntry(ent, fields.fields())
		if err != nil {
			t.Fatal(err)
		}
		defer buf.Free()
		return buf.String()
	}
	got, want := entryOf(ours), entryOf(ref)
	if got != want {
		t.Errorf("EncodeEntry, context %v, fields %v:\nlineEncoder %s\nzap         %s", ctx, fields, got, want)
	}
	// A clone with more context; the original unchanged.
	more := d.ops(0)
	oursClone, refClone := ours.Clone(), ref.Clone()
	for _, enc := range []zapcore.Encoder{oursClone, refClone} {
		for _, f := range more.fields() {
			f.AddTo(enc)
		}
	}
	if got, want := entryOf(oursClone), entryOf(refClone); got != want {
		t.Errorf("clone's EncodeEntry, context %v then %v, fields %v:\nlineEncoder %s\nzap         %s", ctx, more, fields, got, want)
	}
	if again := entryOf(ours); again != got {
		t.Errorf("EncodeEntry after a clone's fields: %s, was %s", again, got)
	}

	// appendLine, after what a buffer may already hold.
	prefix := []byte(d.str())
	line := (&lineEncoder{}).appendLine(bytes.Clone(prefix), fields)
	buf, err := zapJSON().EncodeEntry(zapcore.Entry{}, []zapcore.Field{zap.Inline(fields)})
	if err != nil {
		t.Fatal(err)
	}
	if want := append(bytes.Clone(prefix), buf.Bytes()...); !bytes.Equal(line, want) {
		t.Errorf("appendLine, fields %v:\nlineEncoder %s\nzap         %s", fields, line, want)
	}
	buf.Free()
}

// draw reads choices from fuzz input; past its end every choice is 0.
type draw struct{ b []byte }

func (d *draw) byte() byte {
	if len(d.b) == 0 {
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *draw) intn(n int) int { return int(d.byte()) % n }

func (d *draw) bool() bool { return d.byte()&1 == 1 }

func (d *draw) bytes(n int) []byte {
	n = min(n, len(d.b))
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

// u64 is a number of a drawn size, from 0 to the largest.
func (d *draw) u64() uint64 {
	switch d.intn(6) {
	case 0:
		return 0
	case 1:
		return uint64(d.byte())
	case 2:
		return uint64(binary.LittleEndian.Uint16(append(d.bytes(2), 0, 0)))
	case 3:
		return uint64(binary.LittleEndian.Uint32(append(d.bytes(4), 0, 0, 0, 0)))
	case 4:
		return math.MaxUint64 - uint64(d.byte())
	}
	return binary.LittleEndian.Uint64(append(d.bytes(8), make([]byte, 8)...))
}

// oddStrings need escaping, are not UTF-8, or are UTF-8 beyond ASCII.
var oddStrings = []string{
	"", "plain", `q"uote\back`, "ctl\x00\x01\x1f\n\r\t\x7f\b\f", "bad\xffutf8", "\xc3", "\xed\xa0\x80",
	"\xf4\x90\x80\x80", "\xef\xbf\xbd", "é ü 日本", "line\u2028sep\u2029", "<html>&'", "\"", "\\", "\x00",
	"emoji \U0001f600", "nginx.service", "/system.slice/docker-4c01db0b339c.scope",
}

// str is an odd string, bytes of the input (any bytes), or a mix.
func (d *draw) str() string {
	switch d.intn(4) {
	case 0:
		return oddStrings[d.intn(len(oddStrings))]
	case 1:
		return string(d.bytes(d.intn(40)))
	case 2:
		return oddStrings[d.intn(len(oddStrings))] + string(d.bytes(d.intn(8))) + oddStrings[d.intn(len(oddStrings))]
	}
	return ""
}

// time is never zero (an event without a time is stamped now, which two
// encoders would do at two instants); some are beyond four-digit years.
func (d *draw) time() time.Time {
	zones := []*time.Location{time.UTC, time.FixedZone("a", 7200), time.FixedZone("b", -34200), time.Local}
	var t time.Time
	switch d.intn(4) {
	case 0:
		t = time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC).Add(time.Duration(d.u64() % (1 << 50)))
	case 1:
		t = time.Unix(0, int64(d.u64()))
	case 2:
		t = time.Date(int(int16(d.u64())), time.Month(d.intn(14)), d.intn(33), d.intn(25), d.intn(61), d.intn(61), int(d.u64()%2e9), time.UTC)
	default:
		t = time.Unix(int64(d.u64()>>1)-(1<<62), int64(d.u64()%1e9))
	}
	if t.IsZero() {
		t = t.Add(1)
	}
	return t.In(zones[d.intn(len(zones))])
}

func (d *draw) addrPort() netip.AddrPort {
	var a netip.Addr
	switch d.intn(6) {
	case 0:
		a = netip.AddrFrom4([4]byte(append(d.bytes(4), 0, 0, 0, 0)))
	case 1:
		a = netip.AddrFrom16([16]byte(append(d.bytes(16), make([]byte, 16)...)))
	case 2:
		a = netip.AddrFrom16([16]byte(append(d.bytes(16), make([]byte, 16)...))).WithZone([]string{"eth0", "1", "\"z\""}[d.intn(3)])
	case 3:
		a = netip.AddrFrom16(netip.AddrFrom4([4]byte(append(d.bytes(4), 0, 0, 0, 0))).As16())
	case 4:
		a = netip.IPv4Unspecified()
	default:
		a = netip.IPv6Unspecified()
	}
	return netip.AddrPortFrom(a, uint16(d.u64()))
}

func (d *draw) event() event.Event {
	kinds := []event.Kind{event.Appeared, event.StateChanged, event.Closed, event.Gap, event.Snapshot, event.Updated}
	ev := event.Event{Kind: kinds[d.intn(len(kinds))], Time: d.time()}
	if d.bool() {
		ev.FirstSeen = ev.Time.Add(-time.Duration(d.u64() % (1 << 40)))
	}
	src, dst := d.addrPort(), d.addrPort()
	ev.Socket = snapshot.Socket{
		Key: snapshot.Key{
			Proto:   []snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP, 132}[d.intn(3)],
			Family:  map[bool]snapshot.Family{true: snapshot.FamilyIPv4, false: snapshot.FamilyIPv6}[src.Addr().Is4()],
			IfIndex: uint32(d.u64()),
			Cookie:  d.u64(),
			Src:     src,
			Dst:     dst,
		},
		State:    snapshot.State(d.intn(14)),
		UID:      uint32(d.u64()),
		Inode:    uint32(d.u64()),
		CgroupID: d.u64(),
	}
	if d.bool() {
		ev.Socket.HasInfo = true
		ev.Socket.Info = snapshot.TCPInfo{
			Len:           []uint16{0, 104, 136, 144, 200, 208, 232, 280}[d.intn(8)],
			RTT:           uint32(d.u64()),
			RTTVar:        uint32(d.u64()),
			TotalRetrans:  uint32(d.u64()),
			BytesAcked:    d.u64(),
			BytesReceived: d.u64(),
			BytesSent:     d.u64(),
			SegsOut:       uint32(d.u64()),
			SegsIn:        uint32(d.u64()),
		}
	}
	ev.PrevState = snapshot.State(d.intn(14))
	ev.Initial, ev.ShortLived, ev.Late = d.bool(), d.bool(), d.bool()
	ev.Direction = event.Direction(d.intn(4))
	if d.bool() {
		ev.Process = &event.Process{PID: int(int64(d.u64())), UID: uint32(d.u64()), User: d.str(), Comm: d.str(), Exe: d.str(), Cmdline: d.str()}
	}
	if d.bool() {
		ev.Cgroup = &event.Cgroup{Path: d.str(), SystemdUnit: d.str(), ContainerID: d.str()}
	}
	if d.bool() {
		ev.Container = &event.Container{ID: d.str(), Name: d.str(), Image: d.str(), ImageID: d.str(), PodName: d.str(), PodNamespace: d.str(), PodUID: d.str()}
	}
	if d.bool() {
		ev.Reason = []string{event.ReasonGone, "destroyed", "dump_failed", "overflow"}[d.intn(4)]
	} else {
		ev.Reason = d.str()
	}
	ev.Count = d.u64()
	if d.bool() {
		ev.Netns, ev.NetnsName = d.u64(), d.str()
	}
	ev.Failure = event.Failure(d.intn(4))
	if d.bool() {
		copy(ev.ID[:], d.bytes(16))
	}
	return ev
}

// op is one field to add, drawn ahead so that both encoders get the
// same; objects and arrays hold more.
type op struct {
	kind int
	key  string
	s    string
	u    uint64
	f    float64
	t    time.Time
	sub  ops
	fail bool // a marshaler's error
}

type ops []op

const (
	opString = iota
	opByteString
	opBinary
	opBool
	opInt
	opUint
	opFloat64
	opFloat32
	opComplex128
	opComplex64
	opDuration
	opTime
	opTimeNanos
	opReflect
	opReflectBad
	opNamespace
	opObject
	opArray
	opInline
	opError
	opStringer
	opSkip
	numOps
)

// floats for the float ops, beside drawn bits.
var floats = []float64{0, math.Copysign(0, -1), 1, -1.5, 0.00099995, 1e21, 1e-7, math.MaxFloat64, math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1), math.Inf(-1), 123456789.123456789}

func (d *draw) ops(depth int) ops {
	n := d.intn(8)
	if depth > 2 {
		n = min(n, 2)
	}
	var os ops
	for range n {
		o := op{kind: d.intn(numOps), key: d.str()}
		switch d.intn(3) {
		case 0:
			o.key = []string{"ts", "event", "src_ip", "k", ""}[d.intn(5)]
		}
		o.s = d.str()
		o.u = d.u64()
		if d.bool() {
			o.f = floats[d.intn(len(floats))]
		} else {
			o.f = math.Float64frombits(d.u64())
		}
		o.t = d.time()
		o.fail = d.intn(5) == 0
		if o.kind == opObject || o.kind == opArray || o.kind == opInline {
			o.sub = d.ops(depth + 1)
		}
		os = append(os, o)
	}
	return os
}

func (os ops) String() string { return fmt.Sprintf("%d fields", len(os)) }

// errDrawn is a marshaler's error, whose text needs escaping.
var errDrawn error = drawnError{}

type drawnError struct{}

func (drawnError) Error() string { return "drawn \"failure\"\n" }

func (os ops) fields() []zapcore.Field {
	fs := make([]zapcore.Field, 0, len(os))
	for _, o := range os {
		fs = append(fs, o.field())
	}
	return fs
}

// MarshalLogObject adds the fields: ops is an object.
func (os ops) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, o := range os {
		o.field().AddTo(enc)
		if o.fail {
			return errDrawn
		}
	}
	return nil
}

// MarshalLogArray appends each op's value: ops is an array.
func (os ops) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, o := range os {
		switch o.kind {
		case opString:
			enc.AppendString(o.s)
		case opByteString:
			enc.AppendByteString([]byte(o.s))
		case opBool:
			enc.AppendBool(o.u&1 == 1)
		case opInt:
			enc.AppendInt64(int64(o.u))
		case opUint:
			enc.AppendUint64(o.u)
		case opFloat64:
			enc.AppendFloat64(o.f)
		case opFloat32:
			enc.AppendFloat32(float32(o.f))
		case opComplex128:
			enc.AppendComplex128(complex(o.f, float64(int64(o.u))))
		case opComplex64:
			enc.AppendComplex64(complex64(complex(o.f, -float64(o.u))))
		case opDuration:
			enc.AppendDuration(time.Duration(o.u))
		case opTime, opTimeNanos:
			enc.AppendTime(o.t)
		case opReflect:
			if err := enc.AppendReflected(map[string]any{"s": o.s, "n": o.u, "k": []string{o.key}}); err != nil {
				return err
			}
		case opReflectBad:
			if err := enc.AppendReflected(func() {}); err != nil && o.fail {
				return err
			}
		case opObject, opInline:
			if err := enc.AppendObject(o.sub); err != nil && o.fail {
				return err
			}
		case opArray:
			if err := enc.AppendArray(o.sub); err != nil && o.fail {
				return err
			}
		default:
			enc.AppendInt(int(int8(o.u)))
			enc.AppendInt32(int32(o.u))
			enc.AppendInt16(int16(o.u))
			enc.AppendInt8(int8(o.u))
			enc.AppendUint(uint(o.u))
			enc.AppendUint32(uint32(o.u))
			enc.AppendUint16(uint16(o.u))
			enc.AppendUint8(uint8(o.u))
			enc.AppendUintptr(uintptr(o.u))
		}
		if o.fail && o.kind == opString {
			return errDrawn
		}
	}
	return nil
}

type stringer string

func (s stringer) String() string { return string(s) }

func (o op) field() zapcore.Field {
	switch o.kind {
	case opString:
		return zap.String(o.key, o.s)
	case opByteString:
		return zap.ByteString(o.key, []byte(o.s))
	case opBinary:
		return zap.Binary(o.key, []byte(o.s))
	case opBool:
		return zap.Bool(o.key, o.u&1 == 1)
	case opInt:
		return [...]zapcore.Field{zap.Int64(o.key, int64(o.u)), zap.Int32(o.key, int32(o.u)), zap.Int16(o.key, int16(o.u)), zap.Int8(o.key, int8(o.u))}[o.u%4]
	case opUint:
		return [...]zapcore.Field{zap.Uint64(o.key, o.u), zap.Uint32(o.key, uint32(o.u)), zap.Uint16(o.key, uint16(o.u)), zap.Uint8(o.key, uint8(o.u)), zap.Uintptr(o.key, uintptr(o.u))}[o.u%5]
	case opFloat64:
		return zap.Float64(o.key, o.f)
	case opFloat32:
		return zap.Float32(o.key, float32(o.f))
	case opComplex128:
		return zap.Complex128(o.key, complex(o.f, float64(int64(o.u))))
	case opComplex64:
		return zap.Complex64(o.key, complex64(complex(o.f, -float64(o.u))))
	case opDuration:
		return zap.Duration(o.key, time.Duration(o.u))
	case opTime:
		return zap.Time(o.key, o.t)
	case opTimeNanos:
		// A time zap stores as nanoseconds (within int64's range).
		return zap.Time(o.key, time.Unix(0, int64(o.u)).In(o.t.Location()))
	case opReflect:
		if o.fail {
			return zap.Reflect(o.key, nil)
		}
		return zap.Reflect(o.key, map[string]any{"s": o.s, "f": []float64{1.5, -2}, "k": o.key, "b": []byte(o.s)})
	case opReflectBad:
		return zap.Reflect(o.key, make(chan int))
	case opNamespace:
		return zap.Namespace(o.key)
	case opObject:
		return zap.Object(o.key, o.sub)
	case opArray:
		return zap.Array(o.key, o.sub)
	case opInline:
		return zap.Inline(o.sub)
	case opError:
		if o.fail {
			return zap.NamedError(o.key, fmt.Errorf("wrapped %q: %w", o.s, errDrawn))
		}
		return zap.NamedError(o.key, errors.New(o.s))
	case opStringer:
		return zap.Stringer(o.key, stringer(o.s))
	}
	return zap.Skip()
}

// TestPlainMatchesEscapes holds plain, which reads eight bytes at a
// time, to the escapes table: every byte value at every position of
// strings of every length up to 20, and random strings.
func TestPlainMatchesEscapes(t *testing.T) {
	want := func(s []byte) bool {
		for _, c := range s {
			if escapes[c] {
				return false
			}
		}
		return true
	}
	for n := 1; n <= 20; n++ {
		for pos := range n {
			for c := range 256 {
				s := bytes.Repeat([]byte{'a'}, n)
				s[pos] = byte(c)
				if got := plain(s); got != want(s) {
					t.Fatalf("plain(%q) = %v", s, got)
				}
				if got := plain(string(s)); got != want(s) {
					t.Fatalf("plain(string %q) = %v", s, got)
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		s := make([]byte, rng.IntN(24))
		for i := range s {
			// Mostly printable ASCII, some of everything.
			s[i] = byte(0x20 + rng.IntN(0x60))
			if rng.IntN(16) == 0 {
				s[i] = byte(rng.Uint32())
			}
		}
		if got := plain(s); got != want(s) {
			t.Fatalf("plain(%q) = %v", s, got)
		}
	}
}
