package sink

// The syslog framing is written here rather than taken from a library:
// log/syslog is frozen and speaks neither RFC 5424 nor RFC 6587 octet
// counting, and the third-party writers are unmaintained. The formats are
// a header line each.

import (
	"bytes"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
)

// Syslog formats.
const (
	FormatRFC5424 = "rfc5424"
	FormatRFC3164 = "rfc3164"
)

// Syslog defaults.
const (
	DefaultSyslogAddress = "/dev/log"
	DefaultFacility      = 16 // local0
	DefaultTag           = "connlogd"
)

// Severities (RFC 5424 section 6.2.1).
const (
	sevWarning = 4
	sevInfo    = 6
)

// syslogSink sends each event as one syslog message whose MSG is the
// event's JSON line.
type syslogSink struct {
	name     string
	rfc3164  bool
	facility int
	tag      string
	host     string // header HOSTNAME; "" leaves it out (rfc3164 on unix)
	pid      string
	tr       *transport
	msg      []byte

	written atomic.Uint64
	dropped atomic.Uint64
}

type syslogConfig struct {
	network, address, format, tag string
	facility                      int
	host                          string
	pid                           int
}

func newSyslogSink(c syslogConfig) *syslogSink {
	s := &syslogSink{
		name:     "sink syslog " + c.network + " " + c.address,
		rfc3164:  c.format == FormatRFC3164,
		facility: c.facility,
		tag:      c.tag,
		host:     headerToken(c.host, 255),
		pid:      strconv.Itoa(c.pid),
		tr:       newTransport(c.network, c.address),
	}
	if s.rfc3164 && c.network == "unix" {
		// The local socket's readers (journald, rsyslog's imuxsock) take
		// the word after the timestamp as the tag; glibc's syslog(3) and
		// log/syslog leave the hostname out there, and so do we.
		s.host = ""
	}
	return s
}

// send frames line (JSON without newline) and delivers it.
func (s *syslogSink) send(ent zapcore.Entry, line []byte) error {
	s.msg = s.header(s.msg[:0], ent)
	s.msg = append(s.msg, line...)
	if err := s.tr.send(s.msg); err != nil {
		s.dropped.Add(1)
		return fmt.Errorf("%s: %w", s.name, err)
	}
	s.written.Add(1)
	return nil
}

// header appends the message header up to MSG:
//
//	RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID -␠
//	RFC 3164: <PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]:␠
func (s *syslogSink) header(b []byte, ent zapcore.Entry) []byte {
	sev := sevInfo
	if ent.Level >= zapcore.WarnLevel {
		sev = sevWarning
	}
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(s.facility*8+sev), 10)
	b = append(b, '>')
	if s.rfc3164 {
		// RFC 3164 time is local and zoneless, as receivers expect.
		b = ent.Time.Local().AppendFormat(b, time.Stamp)
		b = append(b, ' ')
		if s.host != "" {
			b = append(b, s.host...)
			b = append(b, ' ')
		}
		b = append(b, s.tag...)
		b = append(b, '[')
		b = append(b, s.pid...)
		return append(b, "]: "...)
	}
	b = append(b, "1 "...)
	// RFC 5424 allows at most six fractional digits; the JSON ts has all
	// nine.
	b = ent.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, ' ')
	b = appendNil(b, s.host)
	b = append(b, ' ')
	b = append(b, s.tag...)
	b = append(b, ' ')
	b = append(b, s.pid...)
	b = append(b, ' ')
	b = appendNil(b, ent.Message) // MSGID: the event kind
	return append(b, " - "...)    // no structured data
}

func appendNil(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return append(b, s...)
}

// headerToken makes s a valid header word: printable ASCII without
// spaces, at most max bytes.
func headerToken(s string, max int) string {
	b := []byte(s)
	if len(b) > max {
		b = b[:max]
	}
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	return string(b)
}

// validTag reports whether tag can be both an RFC 5424 APP-NAME and an
// RFC 3164 TAG: 1 to 48 printable ASCII characters, none of which would
// end the tag early ("[", "]", ":").
func validTag(tag string) bool {
	if tag == "" || len(tag) > 48 {
		return false
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; c < 33 || c > 126 || c == '[' || c == ']' || c == ':' {
			return false
		}
	}
	return true
}

func (s *syslogSink) reopen() error {
	// Drop the connection so the next send dials afresh: after a syslog
	// daemon restart or a DNS change, not at the next failure.
	s.tr.close()
	s.tr.fails, s.tr.retryAt = 0, time.Time{}
	return nil
}

func (s *syslogSink) close() error {
	if err := s.tr.close(); err != nil {
		return fmt.Errorf("%s: close: %w", s.name, bare(err))
	}
	return nil
}

func (s *syslogSink) stats() Stats {
	return Stats{Sink: s.name, Written: s.written.Load(), Dropped: s.dropped.Load()}
}

// syslogCore adapts a syslogSink to zapcore.Core: it encodes the entry
// with its encoder and sends the line.
type syslogCore struct {
	enc zapcore.Encoder
	s   *syslogSink
}

func (c *syslogCore) Enabled(zapcore.Level) bool { return true }

func (c *syslogCore) With(fields []zapcore.Field) zapcore.Core {
	enc := c.enc.Clone()
	for i := range fields {
		fields[i].AddTo(enc)
	}
	return &syslogCore{enc: enc, s: c.s}
}

func (c *syslogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(ent, c)
}

func (c *syslogCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	buf, err := c.enc.EncodeEntry(ent, fields)
	if err != nil {
		c.s.dropped.Add(1)
		return fmt.Errorf("%s: encode: %w", c.s.name, err)
	}
	err = c.s.send(ent, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}))
	buf.Free()
	return err
}

// Sync has nothing to flush: every message is sent by Write.
func (c *syslogCore) Sync() error { return nil }
