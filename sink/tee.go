// Package sink writes events to the configured outputs (stdout, files,
// syslog) in the native schema: one JSON object per line, documented in
// docs/events.md. Each output is a zapcore.Core; a Tee joins them.
//
// The daemon's own diagnostics never go through this package.
package sink

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"sync"

	"go.uber.org/zap/zapcore"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
)

// ErrClosed is returned by a Tee's methods after Close.
var ErrClosed = errors.New("sink: closed")

// Stats are one sink's counters since it was created.
type Stats struct {
	// Sink names the sink as its errors do: "sink stdout",
	// "sink file /var/log/x.json", "sink syslog tcp host:514", …
	Sink string
	// Written counts events the sink accepted: sent, or buffered for the
	// next Sync.
	Written uint64
	// Dropped counts events the sink lost: refused by a failing output,
	// or still buffered when Close could not flush them.
	Dropped uint64
}

// output is what a Tee needs of a sink besides its zapcore.Core.
type output interface {
	stats() Stats
	reopen() error
	close() error
}

// Tee writes each event to every sink. Its methods are safe for
// concurrent use (a signal handler may Reopen while the poll loop
// writes), but events are meant to come from one goroutine.
type Tee struct {
	mu      sync.Mutex
	core    zapcore.Core
	outs    []output
	builder fieldBuilder
	closed  bool
}

// New opens the configured sinks. host is the "host" field of every
// event and the syslog HOSTNAME. Files are opened now, so a bad path
// fails here; syslog connects at the first Write, so a receiver that is
// down at start-up does not stop the daemon.
func New(specs []config.Sink, host string) (*Tee, error) {
	if len(specs) == 0 {
		return nil, errors.New("sink: no sinks configured")
	}
	t := &Tee{}
	cores := make([]zapcore.Core, 0, len(specs))
	for i := range specs {
		core, out, err := open(&specs[i], host)
		if err != nil {
			for _, o := range t.outs {
				o.close()
			}
			return nil, err
		}
		cores = append(cores, core)
		t.outs = append(t.outs, out)
	}
	t.init(cores)
	return t, nil
}

// NewWriter returns a Tee with a single sink writing to w (which it does
// not close), as `connlogd -once` and tests need. It cannot fail today;
// it returns an error like New so that it may.
func NewWriter(w io.Writer, host string) (*Tee, error) {
	l := newStreamWriter("sink writer", w)
	t := &Tee{outs: []output{l}}
	t.init([]zapcore.Core{zapcore.NewCore(newEncoder(host), l, zapcore.DebugLevel)})
	return t, nil
}

func (t *Tee) init(cores []zapcore.Core) {
	// NewTee returns the core itself when there is only one.
	t.core = zapcore.NewTee(cores...)
	t.builder.fields = make([]zapcore.Field, 0, 32)
}

func open(s *config.Sink, host string) (zapcore.Core, output, error) {
	where := ""
	if s.Line > 0 {
		where = fmt.Sprintf(" (config line %d)", s.Line)
	}
	switch s.Type {
	case config.SinkStdout:
		l := newStreamWriter("sink stdout", os.Stdout)
		return zapcore.NewCore(newEncoder(host), l, zapcore.DebugLevel), l, nil
	case config.SinkFile:
		if s.Path == "" {
			return nil, nil, fmt.Errorf("sink file%s: no path", where)
		}
		l, err := newFileWriter(s.Path, s.Mode)
		if err != nil {
			return nil, nil, err
		}
		return zapcore.NewCore(newEncoder(host), l, zapcore.DebugLevel), l, nil
	case config.SinkSyslog:
		c, err := syslogSpec(s, host)
		if err != nil {
			return nil, nil, fmt.Errorf("sink syslog%s: %w", where, err)
		}
		ss := newSyslogSink(c)
		return &syslogCore{enc: newEncoder(host), s: ss}, ss, nil
	}
	return nil, nil, fmt.Errorf("sink%s: unknown type %q", where, s.Type)
}

// syslogSpec applies defaults to a syslog sink's settings and checks them.
func syslogSpec(s *config.Sink, host string) (syslogConfig, error) {
	c := syslogConfig{
		network:  s.Network,
		address:  s.Address,
		format:   s.Format,
		tag:      s.Tag,
		facility: s.Facility,
		host:     host,
		pid:      os.Getpid(),
	}
	if c.network == "" {
		c.network = "unix"
	}
	switch c.network {
	case "unix":
		if c.address == "" {
			c.address = DefaultSyslogAddress
		}
	case "udp", "tcp":
		if c.address == "" {
			return c, fmt.Errorf("network %s needs an address", c.network)
		}
		if _, _, err := net.SplitHostPort(c.address); err != nil {
			return c, fmt.Errorf("address: %w", err)
		}
	default:
		return c, fmt.Errorf("unknown network %q (want unix, udp or tcp)", c.network)
	}
	switch c.format {
	case "":
		c.format = FormatRFC5424
	case FormatRFC5424, FormatRFC3164:
	default:
		return c, fmt.Errorf("unknown format %q (want %s or %s)", c.format, FormatRFC5424, FormatRFC3164)
	}
	if c.tag == "" {
		c.tag = DefaultTag
	}
	if !validTag(c.tag) {
		return c, fmt.Errorf("tag %q: want 1 to 48 printable ASCII characters without spaces, brackets or colons", c.tag)
	}
	// Facility 0 (kern) is the zero value, and userspace cannot log as
	// the kernel anyway: glibc's syslog(3) turns it into its default too.
	if c.facility == 0 {
		c.facility = DefaultFacility
	}
	if c.facility < 0 || c.facility > 23 {
		return c, fmt.Errorf("facility %d out of range 0-23", c.facility)
	}
	return c, nil
}

// Write writes ev to every sink. A non-nil error means ev was lost by at
// least one sink (Stats says which); the others still got it. A sink
// whose output fails does not slow the others beyond a syslog send's
// timeout (2 s).
func (t *Tee) Write(ev *event.Event) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	// Core.Write directly, not Check then CheckedEntry.Write: the latter
	// prints errors to zap's ErrorOutput instead of returning them, and
	// every core here accepts every level.
	return t.core.Write(entry(ev), t.builder.build(ev))
}

// Sync flushes buffered sinks; call it once per batch of events. Lines a
// failing output did not take stay buffered (up to a bound) for the next
// Sync.
func (t *Tee) Sync() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	return t.core.Sync()
}

// Reopen reopens file sinks at their paths, for log rotation; a file that
// cannot be reopened keeps its old descriptor. Syslog sinks drop their
// connection and redial at the next Write.
func (t *Tee) Reopen() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	var errs []error
	for _, o := range t.outs {
		errs = append(errs, o.reopen())
	}
	return errors.Join(errs...)
}

// Close flushes and closes every sink. Calling it again does nothing.
func (t *Tee) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	for _, o := range t.outs {
		errs = append(errs, o.close())
	}
	return errors.Join(errs...)
}

// Stats returns each sink's counters, in configuration order.
func (t *Tee) Stats() []Stats {
	st := make([]Stats, len(t.outs))
	for i, o := range t.outs {
		st[i] = o.stats()
	}
	return st
}

// Dropped returns the events lost by all sinks together.
func (t *Tee) Dropped() uint64 {
	var n uint64
	for _, o := range t.outs {
		n += o.stats().Dropped
	}
	return n
}

// bare strips the wrappers that repeat the operation and path or address
// our own prefixes already name ("open /x: ", "dial tcp a:b: ", "write: "),
// keeping the cause for errors.Is.
func bare(err error) error {
	for {
		switch e := err.(type) {
		case *fs.PathError:
			err = e.Err
		case *net.OpError:
			err = e.Err
		case *os.SyscallError:
			err = e.Err
		default:
			return err
		}
	}
}
