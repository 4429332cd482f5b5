package sink

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// jsonWriter is the one JSON writer of the three schemas: a zap
// encoder, lineEncoder (jsonenc.go), which writes what zap's own JSON
// encoder writes, at less cost. Every line is one zap object written by
// writeObject: the native schema's members are flat (ts, event and host
// first, as a zap log line has them), an ECS or OCSF document's are
// nested objects, each a zapcore.ObjectMarshaler that the encoder writes
// in place, without allocating. One writer means one quoting of strings,
// one number and time format, whatever the schema.
type jsonWriter struct {
	// enc is a *lineEncoder, written with in place; any other encoder
	// (the differential test's zap JSON encoder) through EncodeEntry.
	enc zapcore.Encoder
	doc [1]zapcore.Field // EncodeEntry's field, kept here so that passing it does not allocate
}

// tsLayout is RFC 3339 in UTC with exactly nine fractional digits. A fixed
// width (unlike time.RFC3339Nano, which trims zeros) keeps lines sortable
// as text and parseable by SIEM patterns that expect one shape.
const tsLayout = "2006-01-02T15:04:05.000000000Z07:00"

// appendTS appends t in UTC as tsLayout formats it, and reports true,
// when its year has four digits; otherwise it appends nothing. It writes
// the fixed shape by hand, digits into place: formatting by layout parses
// the layout on every call, a few percent of a native line's cost.
func appendTS(b []byte, t time.Time) ([]byte, bool) {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return b, false
	}
	hour, minute, sec := t.Clock()
	// "2006-01-02T15:04:05.000000000Z": the separators, then the digits,
	// two at a time.
	ts := [30]byte{4: '-', 7: '-', 10: 'T', 13: ':', 16: ':', 19: '.', 29: 'Z'}
	put2(ts[0:], year/100)
	put2(ts[2:], year%100)
	put2(ts[5:], int(month))
	put2(ts[8:], day)
	put2(ts[11:], hour)
	put2(ts[14:], minute)
	put2(ts[17:], sec)
	ns := t.Nanosecond()
	ts[20] = byte('0' + ns/1e8)
	put2(ts[21:], ns/1e6%100)
	put2(ts[23:], ns/1e4%100)
	put2(ts[25:], ns/100%100)
	put2(ts[27:], ns%100)
	return append(b, ts[:]...), true
}

// put2 writes v, 0 <= v < 100, in the first two bytes of d.
func put2(d []byte, v int) {
	d[0], d[1] = digitPairs[2*v], digitPairs[2*v+1]
}

const digitPairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

// newJSONWriter returns a writer of documents that are all fields: no
// entry key is set, so writeObject's object is the whole line (a native
// line's ts, event and host included). Times in it
// (zapcore.ObjectEncoder.AddTime) are written as the native ts is.
func newJSONWriter() jsonWriter {
	return jsonWriter{enc: &lineEncoder{}}
}

// writeObject appends the JSON line of doc to b: doc's members are the
// line's.
func (w *jsonWriter) writeObject(b []byte, doc zapcore.ObjectMarshaler) ([]byte, error) {
	if e, ok := w.enc.(*lineEncoder); ok {
		return e.appendLine(b, doc), nil
	}
	w.doc[0] = zap.Inline(doc)
	buf, err := w.enc.EncodeEntry(zapcore.Entry{}, w.doc[:])
	w.doc[0] = zapcore.Field{}
	if err != nil {
		return b, fmt.Errorf("encode: %w", err)
	}
	b = append(b, buf.Bytes()...)
	buf.Free()
	return b, nil
}

// strArray is a JSON array of strings. Hand zap a pointer to a package
// variable: that converts to an ArrayMarshaler without allocating.
type strArray []string

func (a *strArray) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, s := range *a {
		enc.AppendString(s)
	}
	return nil
}

// Minimum tcp_info lengths for the counters added after Linux 2.6's 104
// bytes: a shorter attribute means the kernel does not have the field,
// and a zero would be a lie, so the field is left out.
const (
	infoLenBytesRecv = 136 // tcpi_bytes_acked, tcpi_bytes_received: Linux 4.1
	infoLenSegs      = 144 // tcpi_segs_out, tcpi_segs_in: Linux 4.2
	infoLenBytesSent = 208 // tcpi_bytes_sent: Linux 4.19
)

// The helpers below write members that ECS's connlogd object and OCSF's
// unmapped object (and their endpoints) share, so that the two cannot
// differ by accident. A schema that wants another shape stops calling
// the helper.

// addEndpoint writes ip and port. The address is formatted into scratch
// (zap copies it), without the zone: the ifindex carries it.
func addEndpoint(enc zapcore.ObjectEncoder, ap netip.AddrPort, scratch *[64]byte) {
	enc.AddByteString("ip", ap.Addr().WithZone("").AppendTo(scratch[:0]))
	enc.AddUint64("port", uint64(ap.Port()))
}

// addUintString writes v as a decimal string: for identifiers (uids,
// cookies) that schemas type as keywords, or that exceed what JSON
// readers hold exactly.
func addUintString(enc zapcore.ObjectEncoder, k string, v uint64, scratch *[64]byte) {
	enc.AddByteString(k, strconv.AppendUint(scratch[:0], v, 10))
}

// addCookie writes the socket cookie. A string: cookies use all 64 bits,
// beyond Elasticsearch's long and JavaScript's exact integers.
func addCookie(enc zapcore.ObjectEncoder, cookie uint64, scratch *[64]byte) {
	addUintString(enc, "cookie", cookie, scratch)
}

// addNetns writes the network namespace, for which neither ECS nor OCSF
// has a field.
func addNetns(enc zapcore.ObjectEncoder, ev *event.Event) {
	if ev.Netns != 0 {
		enc.AddUint64("netns", ev.Netns)
		if ev.NetnsName != "" {
			enc.AddString("netns_name", ev.NetnsName)
		}
	}
}

// addCgroup writes the cgroup path and systemd unit, for which neither
// schema has a field.
func addCgroup(enc zapcore.ObjectEncoder, c *event.Cgroup) {
	if c != nil {
		enc.AddString("cgroup", c.Path)
		if c.SystemdUnit != "" {
			enc.AddString("systemd_unit", c.SystemdUnit)
		}
	}
}

// addFlags writes the event's flags, each only when it is set.
func addFlags(enc zapcore.ObjectEncoder, ev *event.Event) {
	if ev.Initial && ev.Kind == event.Appeared {
		enc.AddBool("initial", true)
	}
	if ev.Late {
		enc.AddBool("late", true)
	}
	if ev.ShortLived {
		enc.AddBool("short_lived", true)
	}
}

// addInfoRest writes the TCP counters that neither schema's traffic
// fields hold.
func addInfoRest(enc zapcore.ObjectEncoder, in *snapshot.TCPInfo) {
	if in.Len >= infoLenBytesRecv {
		enc.AddUint64("bytes_acked", in.BytesAcked)
	}
	enc.AddUint64("retransmits", uint64(in.TotalRetrans))
	enc.AddUint64("rtt_us", uint64(in.RTT))
}
