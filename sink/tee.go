// Package sink writes events to the configured outputs (stdout, files,
// syslog) in one of three schemas: native (one JSON object per line,
// documented in docs/events.md), ECS (docs/ecs.md) or OCSF
// (docs/ocsf.md). A Tee encodes each event once per schema in use and
// hands the line to every sink. One writer, zap's JSON encoder, writes
// all three: the native schema as a zap log line (native.go), ECS and
// OCSF as nested zap objects, one Go type per schema object (ecs.go,
// ocsf.go), so that a mapping is edited in one place. Syslog sinks queue it for a sender
// goroutine (docs/delivery.md); stdout and file sinks buffer it until
// Sync.
//
// The package never logs: failures are returned, and counted per sink.
// The daemon's own diagnostics never go through it.
package sink

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"sync"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/version"
)

// ErrClosed is returned by a Tee's methods after Close.
var ErrClosed = errors.New("sink: closed")

// Stats are one sink's counters since it was created. At any moment,
// every event handed to the sink is in exactly one of Written, Dropped
// and Queued.
type Stats struct {
	// Sink names the sink as its errors do: "sink stdout",
	// "sink file /var/log/x.json", "sink syslog tcp host:514", …
	Sink string
	// Written counts events the sink put out: for stdout and files,
	// accepted into the buffer the next Sync writes; for syslog, written
	// whole to the connection and not given back: when a connection
	// ends, what its receiver had not acknowledged (over TCP and TLS,
	// its kernel; over RELP, the receiver) goes back to the queue.
	Written uint64
	// Dropped counts events the sink lost: refused by a full queue or a
	// failing output, or still undelivered when Close gave up on them;
	// DroppedBy splits it by reason.
	Dropped   uint64
	DroppedBy [NumDropReasons]uint64
	// Queued counts events a syslog or otlp sink holds for delivery.
	Queued uint64
	// Errors counts the output's failures: failed writes and flushes of
	// a file, failed dials and sends of a syslog sink. A failure drops
	// nothing by itself: the events wait for the next attempt.
	Errors uint64
	// Spool describes the sink's spool; nil without one. Queued then
	// counts the events in it, those a previous run left included.
	Spool *SpoolStats
}

// output is one sink.
type output interface {
	// write takes one encoded event, ending in a newline.
	write(ev *event.Event, line []byte) error
	// lose counts an event the sink cannot be given (it failed to
	// encode) and returns err named after the sink.
	lose(err error) error
	sync() error
	stats() Stats
	reopen() error
	close() error
}

// Options tell the sinks about the daemon.
type Options struct {
	// Host is the "host" field of every event and the syslog HOSTNAME.
	Host string
	// Version is connlogd's version in ECS agent.version and OCSF
	// metadata.product.version; default: the build's module version.
	Version string
	// BootID is the boot the event ids are scoped to (event.IDs);
	// default: the running kernel's.
	BootID event.BootID
}

// Tee writes each event to every sink. Its methods are safe for
// concurrent use (a signal handler may Reopen while the poll loop
// writes), but events are meant to come from one goroutine.
type Tee struct {
	mu      sync.Mutex
	outs    []output
	schemas []schema // of each output
	encs    [numSchemas]encoder
	lines   [numSchemas][]byte
	errs    [numSchemas]error
	closed  bool
	boot    event.BootID
	ids     *event.IDs // created by the first Write
}

// New opens the configured sinks; host is Options.Host.
func New(specs []config.Sink, host string) (*Tee, error) {
	return Open(specs, Options{Host: host})
}

// Open opens the configured sinks. Files are opened and TLS files read
// now, so a bad path fails here; syslog sinks connect in the background,
// so a receiver that is down at start-up does not stop the daemon (its
// events wait in the queue).
func Open(specs []config.Sink, opt Options) (*Tee, error) {
	if len(specs) == 0 {
		return nil, errors.New("sink: no sinks configured")
	}
	t, err := prepare(specs, opt)
	if err != nil {
		return nil, err
	}
	t.start()
	return t, nil
}

// prepare opens the sinks without starting the syslog senders, so that
// tests can adjust them first.
func prepare(specs []config.Sink, opt Options) (*Tee, error) {
	if opt.Version == "" {
		opt.Version = version.Version()
	}
	t := &Tee{boot: opt.BootID}
	for i := range specs {
		out, sch, err := open(&specs[i], opt)
		if err != nil {
			t.closeAll()
			return nil, err
		}
		t.add(out, sch, opt)
	}
	return t, nil
}

// background is a sink with a sender goroutine.
type background interface {
	start()
	beginClose()
}

func (t *Tee) start() {
	for _, o := range t.outs {
		if s, ok := o.(background); ok {
			s.start()
		}
	}
}

// NewWriter returns a Tee with a single native-schema sink writing to w
// (which it does not close), as `connlogd -once` and tests need. It
// cannot fail today; it returns an error like New so that it may.
func NewWriter(w io.Writer, host string) (*Tee, error) {
	t := &Tee{}
	t.add(newStreamWriter("sink writer", w), schemaNative, Options{Host: host, Version: version.Version()})
	return t, nil
}

func (t *Tee) add(o output, s schema, opt Options) {
	t.outs = append(t.outs, o)
	t.schemas = append(t.schemas, s)
	if t.encs[s] == nil {
		t.encs[s] = newSchemaEncoder(s, opt.Host, opt.Version)
		t.lines[s] = make([]byte, 0, 1024)
	}
}

func open(s *config.Sink, opt Options) (output, schema, error) {
	host := opt.Host
	where := ""
	if s.Line > 0 {
		where = fmt.Sprintf(" (config line %d)", s.Line)
	}
	sch, err := parseSchema(s.Schema)
	if err != nil {
		return nil, 0, fmt.Errorf("sink %s%s: %w", s.Type, where, err)
	}
	switch s.Type {
	case config.SinkStdout:
		return newStreamWriter("sink stdout", os.Stdout), sch, nil
	case config.SinkFile:
		if s.Path == "" {
			return nil, 0, fmt.Errorf("sink file%s: no path", where)
		}
		l, err := newFileWriter(s.Path, s.Mode)
		if err != nil {
			return nil, 0, err
		}
		return l, sch, nil
	case config.SinkSyslog:
		c, err := syslogSpec(s, host)
		if err != nil {
			return nil, 0, fmt.Errorf("sink syslog%s: %w", where, err)
		}
		ss, err := newSyslogSink(c)
		if err != nil {
			return nil, 0, fmt.Errorf("sink syslog %s %s%s: %w", c.network, c.address, where, err)
		}
		return ss, sch, nil
	case config.SinkOTLP:
		o, err := newOTLPSink(s, opt)
		if err != nil {
			return nil, 0, fmt.Errorf("sink otlp%s: %w", where, err)
		}
		return o, sch, nil
	}
	return nil, 0, fmt.Errorf("sink%s: unknown type %q", where, s.Type)
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
		queue:    s.QueueSize,
		drain:    s.DrainTimeout,
		spool:    s.Spool,
	}
	// Defaults for a Sink built in code; the rules are config's, so that
	// a check and an open cannot disagree.
	if c.network == "" {
		c.network = config.DefaultSyslogNetwork
	}
	if c.address == "" && c.network == "unix" {
		c.address = DefaultSyslogAddress
	}
	if c.format == "" {
		c.format = FormatRFC5424
	}
	if c.tag == "" {
		c.tag = DefaultTag
	}
	// Facility 0 (kern) is the zero value, and userspace cannot log as
	// the kernel anyway: glibc's syslog(3) turns it into its default too.
	if c.facility == 0 {
		c.facility = DefaultFacility
	}
	if err := config.CheckNetwork(c.network); err != nil {
		return c, err
	}
	if c.address == "" {
		return c, fmt.Errorf("network %s needs an address", c.network)
	}
	if err := config.CheckAddress(c.network, c.address); err != nil {
		return c, fmt.Errorf("address: %w", err)
	}
	if c.network == "tls" || c.network == "relp-tls" {
		c.tls = &s.TLS
	} else if s.TLS != (config.TLS{}) {
		return c, fmt.Errorf("tls settings need network tls or relp-tls, not %s", c.network)
	}
	if c.spool.Dir != "" {
		switch c.network {
		case "tcp", "tls", "relp", "relp-tls":
		default:
			return c, fmt.Errorf("a spool needs network tcp, tls, relp or relp-tls, not %s (nothing acknowledges a datagram)", c.network)
		}
	}
	if c.queue < 0 || c.drain < 0 {
		return c, errors.New("queue_size and drain_timeout must not be negative")
	}
	if err := config.CheckFormat(c.format); err != nil {
		return c, err
	}
	if err := config.CheckTag(c.tag); err != nil {
		return c, fmt.Errorf("tag: %w", err)
	}
	if err := config.CheckFacility(c.facility); err != nil {
		return c, fmt.Errorf("facility: %w", err)
	}
	return c, nil
}

// Write hands ev to every sink. It never waits for a network receiver:
// syslog sinks queue the event. A non-nil error means ev was lost by at
// least one sink (Stats says which); the others still got it. Write
// sets ev.Time when it is zero, and ev.ID when it is zero.
func (t *Tee) Write(ev *event.Event) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	// Stamped once here, so that every schema and sink writes the same
	// time and id, and a resend the same bytes.
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.ID.IsZero() {
		if t.ids == nil {
			t.ids = event.NewIDs(bootOr(t.boot), getpid(), runStart())
		}
		ev.ID = t.ids.Next()
	}
	for s, enc := range t.encs {
		if enc != nil {
			t.lines[s], t.errs[s] = enc.encode(t.lines[s][:0], ev)
		}
	}
	var errs []error
	for i, o := range t.outs {
		var err error
		if s := t.schemas[i]; t.errs[s] != nil {
			err = o.lose(t.errs[s])
		} else {
			err = o.write(ev, t.lines[s])
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// The scope of the event ids; tests fix them.
var (
	readBootID = event.ReadBootID
	getpid     = os.Getpid
	runStart   = time.Now
)

// bootOr returns b, or the running kernel's boot id when b is zero. A
// kernel without one (not Linux) leaves it zero: the runs are then told
// apart by the process id and start time alone.
func bootOr(b event.BootID) event.BootID {
	if b != (event.BootID{}) {
		return b
	}
	b, _ = readBootID()
	return b
}

// Sync writes out what the stdout and file sinks buffered; call it once
// per batch of events. Lines a failing output did not take stay buffered
// (up to a bound) for the next Sync. For a syslog sink it does not wait:
// it reports whether the sink's sender is failing (receiver away), while
// its queue holds the events.
func (t *Tee) Sync() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	var errs []error
	for _, o := range t.outs {
		if err := o.sync(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Reopen reopens file sinks at their paths, for log rotation; a file that
// cannot be reopened keeps its old descriptor. Syslog sinks reload their
// TLS files and redial at once.
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

// Close flushes and closes every sink: files are written out and
// fsynced, syslog queues delivered within each sink's drain timeout
// (together: the drains run at once), and what could not be delivered is
// counted as dropped. Calling it again does nothing.
func (t *Tee) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	return t.closeAll()
}

func (t *Tee) closeAll() error {
	for _, o := range t.outs {
		if s, ok := o.(background); ok {
			s.beginClose()
		}
	}
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
