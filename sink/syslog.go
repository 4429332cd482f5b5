package sink

// The syslog framing is written here rather than taken from a library:
// log/syslog is frozen and speaks neither RFC 5424 nor RFC 6587 octet
// counting, and the third-party writers are unmaintained. The formats are
// a header line each.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/spool"
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
// event's JSON line. Write only queues the message; a sender goroutine
// delivers the queue, so a slow or absent receiver never blocks the poll
// loop. The queue is bounded; what overflows it is dropped and counted.
type syslogSink struct {
	name     string
	rfc3164  bool
	facility int
	tag      string
	host     string // header HOSTNAME; "" leaves it out (rfc3164 on unix)
	pid      string

	q       *queue
	errFull error // returned for every event the full queue refuses

	// The sender goroutine's own.
	tr *transport
	b  batch

	reconnect // Reopen's: TLS files, redial now

	drain   time.Duration
	closing chan struct{} // closed by close: deliver the queue, then stop
	ctx     context.Context
	abort   context.CancelFunc // the drain time is up: stop now
	done    chan struct{}      // the sender has returned
	once    sync.Once

	senderErr

	started     bool
	drainTimer  *time.Timer
	droppedOpen uint64 // drops before close began

	written atomic.Uint64
	dropped drops
	errors  atomic.Uint64

	// With a spool (tcp, tls, relp, relp-tls), events wait in it instead
	// of q, and leave it when the receiver acknowledges them: sp is the
	// spool, spMsg the producer's scratch; the rest the sender's own.
	sp        *sharedSpool
	spMsg     []byte
	spBatches []spoolRead // read and not yet wholly acknowledged
	spAcked   int         // acknowledged messages of spBatches[0]
	spRecover uint64      // events found in the spool at start
	// spWritten counts events Written and not yet acknowledged: they are
	// still in the spool, but no longer Queued.
	spWritten atomic.Int64
}

// spoolRead is one read from a syslog sink's spool: n messages, ending
// before end.
type spoolRead struct {
	end spool.Cursor
	n   int
}

type syslogConfig struct {
	network, address, format, tag string
	facility                      int
	host                          string
	pid                           int
	queue                         int
	drain                         time.Duration
	tls                           *config.TLS
	spool                         config.Spool
}

// newSyslogSink returns a sink whose sender is not started (tests look
// at it that way); start starts it.
func newSyslogSink(c syslogConfig) (*syslogSink, error) {
	if c.queue <= 0 {
		c.queue = config.DefaultQueueSize
	}
	if c.drain <= 0 {
		c.drain = config.DefaultDrainTimeout
	}
	s := &syslogSink{
		name:     "sink syslog " + c.network + " " + c.address,
		rfc3164:  c.format == FormatRFC3164,
		facility: c.facility,
		tag:      c.tag,
		host:     headerToken(c.host, 255),
		pid:      strconv.Itoa(c.pid),
		q:        newQueue(c.queue),
		drain:    c.drain,
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.errFull = fmt.Errorf("%s: queue full (%d events): events dropped", s.name, c.queue)
	s.ctx, s.abort = context.WithCancel(context.Background())
	s.kick = make(chan struct{}, 1)
	if s.rfc3164 && c.network == "unix" {
		// The local socket's readers (journald, rsyslog's imuxsock) take
		// the word after the timestamp as the tag; glibc's syslog(3) and
		// log/syslog leave the hostname out there, and so do we.
		s.host = ""
	}
	if c.tls != nil {
		host, _, _ := net.SplitHostPort(c.address)
		if err := s.useTLS(c.tls, host); err != nil {
			return nil, err
		}
	}
	s.tr = newTransport(c.network, c.address, s.tlsConf.Load)
	s.tr.reclaims = s.reclaimed
	s.tr.refusals = s.refused
	if c.spool.Dir != "" {
		sp, err := acquireSpool(c.spool)
		if err != nil {
			return nil, err
		}
		s.sp = sp
		s.spRecover = sp.Len()
		s.tr.acked = s.spoolAcked
		s.errFull = fmt.Errorf("%s: spool full (max_bytes %d): oldest events dropped", s.name, sp.max)
	}
	return s, nil
}

func (s *syslogSink) start() {
	s.started = true
	go s.run()
}

// loadTLS reads the CA bundle and client pair. Verification cannot be
// turned off: a private CA is what ca_file is for.
func loadTLS(spec *config.TLS, host string) (*tls.Config, error) {
	if spec == nil {
		spec = &config.TLS{}
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: spec.ServerName,
	}
	if conf.ServerName == "" {
		conf.ServerName = host
	}
	roots, certs, err := spec.Load()
	if err != nil {
		return nil, err
	}
	conf.RootCAs, conf.Certificates = roots, certs
	return conf, nil
}

// write queues one event; line is its JSON with the newline. It fails
// only when the queue is full and the event is dropped.
func (s *syslogSink) write(ev *event.Event, line []byte) error {
	ent := entry(ev)
	line = bytes.TrimSuffix(line, []byte{'\n'})
	if s.sp != nil {
		s.spMsg = append(s.header(s.spMsg[:0], ent), line...)
		dropped, err := s.sp.Append(s.spMsg, ent.Time)
		if dropped > 0 {
			s.dropped.add(DropSpoolFull, uint64(dropped))
		}
		switch {
		case err != nil:
			s.dropped.add(DropOutputFailed, 1)
			return fmt.Errorf("%s: %w", s.name, err)
		case dropped > 0:
			return s.errFull
		}
		return nil
	}
	q := s.q
	q.mu.Lock()
	if q.held >= q.limit {
		q.mu.Unlock()
		s.dropped.add(DropQueueFull, 1)
		return s.errFull
	}
	q.pend.data = s.header(q.pend.data, ent)
	q.pend.data = append(q.pend.data, line...)
	q.pend.ends = append(q.pend.ends, len(q.pend.data))
	q.held++
	q.mu.Unlock()
	q.signal()
	return nil
}

func (s *syslogSink) lose(err error) error {
	s.dropped.add(DropOutputFailed, 1)
	return fmt.Errorf("%s: %w", s.name, err)
}

// sync reports the sender's state: nil while it delivers, else why it
// cannot. It does not wait for the queue to drain.
func (s *syslogSink) sync() error {
	if err := s.lastError(); err != nil {
		return fmt.Errorf("%s: %w (%d events queued)", s.name, err, s.queued())
	}
	return nil
}

// run is the sender goroutine: it takes whatever is queued and delivers
// it, until close; then it delivers what is left within the drain time.
func (s *syslogSink) run() {
	defer close(s.done)
	var wake <-chan struct{}
	var tick <-chan time.Time
	if s.sp != nil {
		if !s.sp.waitTurn(s.closing) {
			return // closed before the sink it replaced let go of the spool
		}
		defer s.sp.endTurn()
		wake = s.sp.Wake()
		t := time.NewTicker(spoolSyncEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-wake:
		case <-tick:
			// Acknowledgements are otherwise looked at before a write:
			// an idle sender would keep acknowledged events in the spool.
			if s.tr.conn != nil && s.tr.framing != frameDatagram {
				s.tr.trimAcked()
			}
			if err := s.sp.Sync(); err != nil {
				s.errors.Add(1)
				s.setErr(err)
			}
			continue
		case <-s.q.wake:
		case <-s.kick:
		case <-s.closing:
		case <-s.tr.lost():
		}
		if s.take() == 0 && !s.tr.owes() {
			select {
			case <-s.closing:
				s.finish()
				return
			default:
				continue
			}
		}
		s.deliver()
		if s.ctx.Err() != nil {
			s.finish()
			return
		}
	}
}

// deliver sends the taken batch, retrying after failures until it is
// all delivered or the drain time at close is up.
func (s *syslogSink) deliver() {
	b := &s.b
	// Beyond the batch, messages a dead connection gave back are owed:
	// they go out now, not when the next event comes.
	for i := 0; i < b.len() || s.tr.owes(); {
		if s.ctx.Err() != nil {
			if s.sp == nil {
				s.discard(DropShutdown, b.len()-i)
			}
			break // finish counts what resend holds; a spool keeps it
		}
		if s.takeFresh() {
			s.tr.drop(true)
			s.tr.fails = 0
		}
		n, err := s.tr.send(s.ctx, b, i)
		if n > 0 {
			s.written.Add(uint64(n))
			s.resolve(n)
			i += n
		}
		if err == nil {
			s.setErr(nil)
			continue
		}
		s.setErr(err)
		s.errors.Add(1)
		if errors.Is(err, errMsgSize) {
			s.discard(DropOutputFailed, 1)
			i++
			continue
		}
		s.wait(s.ctx, s.tr.backoff())
	}
	b.reset()
}

// reclaimed adjusts the counters when n messages counted as written
// turn out not to have reached the receiver (n > 0; they are held again,
// to be resent) or have been written again (n < 0).
func (s *syslogSink) reclaimed(n int) {
	if n > 0 {
		s.written.Add(^uint64(n - 1)) // subtracts n
	} else {
		s.written.Add(uint64(-n))
	}
	s.resolve(-n)
}

// refused moves n messages counted as written to dropped: the receiver
// answered them with a refusal.
func (s *syslogSink) refused(n int, err error) {
	s.written.Add(^uint64(n - 1))
	s.dropped.add(DropRefused, uint64(n))
	s.setErr(err)
}

func (s *syslogSink) discard(r DropReason, n int) {
	s.dropped.add(r, uint64(n))
	s.resolve(n)
}

// resolve records that n taken events were written or dropped (n < 0:
// given back). With a spool, written events stay in it until
// acknowledged, and are counted apart from those still to send.
func (s *syslogSink) resolve(n int) {
	if s.sp != nil {
		s.spWritten.Add(int64(n))
		return
	}
	s.q.resolve(n)
}

// take fills s.b with what is queued: from the spool, or what the
// producer left in q. It returns how many messages it took.
func (s *syslogSink) take() int {
	if s.sp == nil {
		return s.q.take(&s.b)
	}
	s.b.reset()
	end, n, corrupt, err := s.sp.Read(relpWindow, chunkSize*16, s.b.add)
	if corrupt > 0 {
		s.dropped.add(DropOutputFailed, uint64(corrupt))
	}
	if err != nil {
		s.errors.Add(1)
		s.setErr(err)
	}
	if n > 0 {
		s.spBatches = append(s.spBatches, spoolRead{end: end, n: n})
	}
	return n
}

// spoolAcked lets the spool go of the n oldest messages written: they
// leave it batch by batch (a crash may send a partly acknowledged batch
// again: duplicates, never losses).
func (s *syslogSink) spoolAcked(n int) {
	s.spWritten.Add(-int64(n))
	s.spAcked += n
	var last *spool.Cursor
	for len(s.spBatches) > 0 && s.spAcked >= s.spBatches[0].n {
		s.spAcked -= s.spBatches[0].n
		last = &s.spBatches[0].end
		s.spBatches = s.spBatches[1:]
	}
	if last != nil {
		if _, err := s.sp.Ack(*last); err != nil {
			s.errors.Add(1)
			s.setErr(err)
		}
	}
}

// queued returns the events held for delivery.
func (s *syslogSink) queued() uint64 {
	if s.sp == nil {
		return uint64(s.q.queued())
	}
	return uint64(max(int64(s.sp.Len())-s.spWritten.Load(), 0))
}

// finish runs as the sender stops: whatever is still queued could not be
// delivered in time and counts as dropped.
func (s *syslogSink) finish() {
	if s.sp != nil {
		// What is not acknowledged stays in the spool for the next start.
		s.b.reset()
		s.tr.drop(s.ctx.Err() == nil)
		s.tr.resend.reset()
		return
	}
	s.b.reset()
	left := s.q.take(&s.b)
	if left > 0 {
		s.discard(DropShutdown, left)
	}
	s.b.reset()
	s.tr.drop(s.ctx.Err() == nil)
	if n := s.tr.resend.len(); n > 0 {
		// Reclaimed from a dead connection and never resent.
		s.tr.resend.reset()
		s.discard(DropShutdown, n)
	}
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

// reopen reloads the TLS files (a renewed certificate) and makes the
// sender redial at once: after a syslog daemon restart or a DNS change,
// not at the next failure. Bad TLS files keep the old settings.
func (s *syslogSink) reopen() error { return s.reconnect.reopen(s.name) }

// beginClose starts the drain: the sender delivers what is queued, for
// at most the drain time from now.
func (s *syslogSink) beginClose() {
	if !s.started {
		return // Open failed before starting it: nothing was queued
	}
	s.once.Do(func() {
		s.droppedOpen = s.dropped.total()
		close(s.closing)
		s.drainTimer = time.AfterFunc(s.drain, s.abort)
	})
}

// close drains the queue (bounded by the drain time) and stops the
// sender. Events it could not deliver are counted as dropped, and the
// error says how many.
func (s *syslogSink) close() error {
	if !s.started {
		if s.sp != nil {
			return s.sp.release()
		}
		return nil
	}
	s.beginClose()
	<-s.done
	s.drainTimer.Stop()
	s.abort()
	if s.sp != nil {
		left := s.queued() + uint64(max(s.spWritten.Load(), 0))
		err := s.sp.release()
		if err != nil {
			err = fmt.Errorf("%s: %w", s.name, err)
		}
		if left > 0 {
			cause := s.closeCause()
			err = errors.Join(err, fmt.Errorf("%s: close: %d events not acknowledged within %v stay in the spool for the next start: %w", s.name, left, s.drain, cause))
		}
		return err
	}
	if lost := s.dropped.total() - s.droppedOpen; lost > 0 {
		cause := s.closeCause()
		if errors.Is(cause, errRefused) {
			return fmt.Errorf("%s: close: %d events not delivered: %w", s.name, lost, cause)
		}
		return fmt.Errorf("%s: close: %d events not delivered within %v: %w", s.name, lost, s.drain, cause)
	}
	return nil
}

func (s *syslogSink) stats() Stats {
	st := Stats{Sink: s.name, Written: s.written.Load(), Queued: s.queued(), Errors: s.errors.Load()}
	if s.sp != nil {
		sp := s.sp.Stats()
		st.Spool = &SpoolStats{Bytes: sp.Bytes, Events: sp.Events, Oldest: sp.Oldest, TornBytes: sp.TornBytes, Recovered: s.spRecover}
	}
	s.dropped.fill(&st)
	return st
}
