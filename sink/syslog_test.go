package sink

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/octetcounting"
	"github.com/leodido/go-syslog/v4/rfc3164"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// syslogTee opens one syslog sink; tweak, when not nil, adjusts it
// before its sender starts.
func syslogTee(t *testing.T, s config.Sink, tweak func(*syslogSink)) (*Tee, *syslogSink) {
	t.Helper()
	s.Type = config.SinkSyslog
	tee, err := prepare([]config.Sink{s}, Options{Host: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	ss := tee.outs[0].(*syslogSink)
	if tweak != nil {
		tweak(ss)
	}
	tee.start()
	t.Cleanup(func() { tee.Close() })
	return tee, ss
}

// kindsEvents is one event of each kind a daemon sends.
func kindsEvents() []event.Event {
	return []event.Event{
		{Kind: event.Appeared, Time: t0, Socket: tcp4, FirstSeen: t0, Initial: true},
		{Kind: event.StateChanged, Time: t0, Socket: tcp4, PrevState: snapshot.StateSynSent, FirstSeen: t0},
		{Kind: event.Closed, Time: t0, Socket: tcp6, FirstSeen: t0.Add(-time.Second), Reason: event.ReasonGone},
		{Kind: event.Gap, Time: t0, Reason: "dump_failed"},
	}
}

// checkMessage checks a parsed message against the event it carries.
func checkMessage(t *testing.T, m *syslog.Base, ev *event.Event, tag string, wantMsgID bool) {
	t.Helper()
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	if got := str(m.Appname); got != tag {
		t.Errorf("app-name %q, want %q", got, tag)
	}
	if got := str(m.ProcID); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("procid %q, want our pid", got)
	}
	if wantMsgID {
		if got := str(m.MsgID); got != ev.Kind.String() {
			t.Errorf("msgid %q, want %q", got, ev.Kind)
		}
	}
	wantSev := uint8(sevInfo)
	if ev.Kind == event.Gap {
		wantSev = sevWarning
	}
	if m.Facility == nil || *m.Facility != DefaultFacility || m.Severity == nil || *m.Severity != wantSev {
		t.Errorf("facility %v severity %v, want %d %d", m.Facility, m.Severity, DefaultFacility, wantSev)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(str(m.Message)), &body); err != nil {
		t.Fatalf("MSG is not JSON: %v: %q", err, str(m.Message))
	}
	if body["event"] != ev.Kind.String() || body["host"] != "web-1" {
		t.Errorf("MSG event %v host %v, want %v web-1", body["event"], body["host"], ev.Kind)
	}
}

func parse5424(t *testing.T, frame []byte) *syslog.Base {
	t.Helper()
	m, err := rfc5424.NewParser().Parse(frame)
	if err != nil {
		t.Fatalf("rfc5424: %v: %q", err, frame)
	}
	msg := m.(*rfc5424.SyslogMessage)
	if h := msg.Hostname; h == nil || *h != "web-1" {
		t.Errorf("hostname %v", h)
	}
	if msg.Timestamp == nil || !msg.Timestamp.Equal(t0.Truncate(time.Microsecond)) {
		t.Errorf("timestamp %v", msg.Timestamp)
	}
	return &msg.Base
}

func writeEvents(t *testing.T, tee *Tee, evs []event.Event) {
	t.Helper()
	for i := range evs {
		if err := tee.Write(&evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tee.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readDatagrams(t *testing.T, pc net.PacketConn, n int) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 64<<10)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range n {
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(buf[:k]))
	}
	return out
}

func TestSyslogUDP5424(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tee, _ := syslogTee(t, config.Sink{Network: "udp", Address: pc.LocalAddr().String(), Tag: "cl-test"}, nil)
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i, d := range readDatagrams(t, pc, len(evs)) {
		checkMessage(t, parse5424(t, d), &evs[i], "cl-test", true)
	}
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	if st := tee.Stats()[0]; st.Written != uint64(len(evs)) || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSyslogUDP3164(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tee, _ := syslogTee(t, config.Sink{Network: "udp", Address: pc.LocalAddr().String(), Format: FormatRFC3164}, nil)
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i, d := range readDatagrams(t, pc, len(evs)) {
		m, err := rfc3164.NewParser().Parse(d)
		if err != nil {
			t.Fatalf("rfc3164: %v: %q", err, d)
		}
		msg := m.(*rfc3164.SyslogMessage)
		if h := msg.Hostname; h == nil || *h != "web-1" {
			t.Errorf("hostname %v", h)
		}
		checkMessage(t, &msg.Base, &evs[i], DefaultTag, false)
	}
}

func TestSyslogUnixgram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tee, _ := syslogTee(t, config.Sink{Address: path}, nil) // network defaults to unix
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i, d := range readDatagrams(t, pc, len(evs)) {
		checkMessage(t, parse5424(t, d), &evs[i], DefaultTag, true)
	}
}

// tcpServer collects what its clients send, one connection at a time,
// over TCP or TLS.
type tcpServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn net.Conn
	raw  bytes.Buffer
	in   chan []byte // frames, split by octet counting
}

func startTCP(t *testing.T, addr string, conf *tls.Config) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	s := &tcpServer{ln: ln, in: make(chan []byte, 100000)}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.stop)
	return s
}

func (s *tcpServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conn = c
		s.mu.Unlock()
		r := bufio.NewReader(io.TeeReader(c, lockedWriter{s}))
		for {
			n, err := r.ReadString(' ')
			if err != nil {
				break
			}
			size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
			if err != nil {
				break
			}
			frame := make([]byte, size)
			if _, err := io.ReadFull(r, frame); err != nil {
				break
			}
			s.in <- frame
		}
		c.Close()
	}
}

type lockedWriter struct{ s *tcpServer }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.raw.Write(p)
}

// stop closes the listener and the connection and waits for the server.
func (s *tcpServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	if s.conn != nil {
		s.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *tcpServer) frame(t *testing.T) []byte {
	t.Helper()
	select {
	case f := <-s.in:
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame received")
		return nil
	}
}

func TestSyslogTCPOctetCounting(t *testing.T) {
	srv := startTCP(t, "127.0.0.1:0", nil)
	tee, _ := syslogTee(t, config.Sink{Network: "tcp", Address: srv.ln.Addr().String()}, nil)
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i := range evs {
		checkMessage(t, parse5424(t, srv.frame(t)), &evs[i], DefaultTag, true)
	}
	// The whole stream, through go-syslog's own octet-counting parser.
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	var results []*syslog.Result
	octetcounting.NewParser(syslog.WithListener(func(r *syslog.Result) { results = append(results, r) })).Parse(bytes.NewReader(srv.raw.Bytes()))
	if len(results) != len(evs) {
		t.Fatalf("octet-counting parser found %d messages, want %d", len(results), len(evs))
	}
	for i, r := range results {
		if r.Error != nil {
			t.Fatalf("message %d: %v", i, r.Error)
		}
		checkMessage(t, &r.Message.(*rfc5424.SyslogMessage).Base, &evs[i], DefaultTag, true)
	}
}

// TLS with the server's certificate checked against ca_file, and mutual
// TLS: the server requires the client's certificate.
func TestSyslogTLS(t *testing.T) {
	pki := newTestPKI(t)
	for _, mutual := range []bool{false, true} {
		t.Run(fmt.Sprintf("mutual=%v", mutual), func(t *testing.T) {
			conf := &tls.Config{Certificates: []tls.Certificate{pki.serverPair}, MinVersion: tls.VersionTLS12}
			spec := config.TLS{CAFile: pki.caFile}
			if mutual {
				conf.ClientAuth, conf.ClientCAs = tls.RequireAndVerifyClientCert, pki.pool
				spec.CertFile, spec.KeyFile = pki.clientCert, pki.clientKey
			}
			srv := startTCP(t, "127.0.0.1:0", conf)
			tee, _ := syslogTee(t, config.Sink{Network: "tls", Address: srv.ln.Addr().String(), TLS: spec}, nil)
			evs := kindsEvents()
			writeEvents(t, tee, evs)
			for i := range evs {
				checkMessage(t, parse5424(t, srv.frame(t)), &evs[i], DefaultTag, true)
			}
			if err := tee.Close(); err != nil {
				t.Fatal(err)
			}
			if st := tee.Stats()[0]; st.Written != uint64(len(evs)) || st.Dropped != 0 || st.Queued != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// The server's certificate is checked by default: against the system's
// roots, which do not hold the test CA, or under the wrong name. Events
// stay queued, Sync says why, and Close counts them as dropped.
func TestSyslogTLSVerifies(t *testing.T) {
	pki := newTestPKI(t)
	srv := startTCP(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.serverPair}})
	for _, tt := range []struct {
		name string
		spec config.TLS
		want string
	}{
		{"system roots", config.TLS{}, "certificate signed by unknown authority"},
		{"wrong name", config.TLS{CAFile: pki.caFile, ServerName: "logs.example"}, "not logs.example"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tee, _ := syslogTee(t, config.Sink{Network: "tls", Address: srv.ln.Addr().String(), TLS: tt.spec, DrainTimeout: 50 * time.Millisecond}, nil)
			if err := tee.Write(gapAt("x")); err != nil {
				t.Fatal(err)
			}
			var err error
			waitFor(t, func() bool { err = tee.Sync(); return err != nil })
			if !strings.Contains(err.Error(), "tls handshake: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Sync = %v, want a handshake error with %q", err, tt.want)
			}
			err = tee.Close()
			if err == nil || !strings.Contains(err.Error(), "close: 1 events not delivered") {
				t.Errorf("Close = %v", err)
			}
			if st := tee.Stats()[0]; st.Written != 0 || st.Dropped != 1 || st.Queued != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	select {
	case f := <-srv.in:
		t.Errorf("server received %q", f)
	default:
	}
}

func TestSyslogTLSFiles(t *testing.T) {
	pki := newTestPKI(t)
	for _, tt := range []struct {
		spec config.TLS
		want string
	}{
		{config.TLS{CAFile: filepath.Join(pki.dir, "none.pem")}, "tls.ca_file: open "},
		{config.TLS{CAFile: pki.serverKey}, "no PEM certificate found"},
		{config.TLS{CertFile: pki.clientCert, KeyFile: pki.serverKey}, "private key does not match public key"},
	} {
		_, err := New([]config.Sink{{Type: config.SinkSyslog, Network: "tls", Address: "127.0.0.1:6514", TLS: tt.spec, Line: 4}}, "h")
		if err == nil || !strings.HasPrefix(err.Error(), "sink syslog tls 127.0.0.1:6514 (config line 4): ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: New = %v, want …%s…", tt.spec, err, tt.want)
		}
	}
}

// A unix stream socket at the address: the datagram dial fails with
// EPROTOTYPE and the sink falls back to a stream with newline framing.
func TestSyslogUnixStreamFallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := make(chan string, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	tee, _ := syslogTee(t, config.Sink{Network: "unix", Address: path}, nil)
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i := range evs {
		select {
		case l := <-lines:
			checkMessage(t, parse5424(t, []byte(l)), &evs[i], DefaultTag, true)
		case <-time.After(10 * time.Second):
			t.Fatal("no line received")
		}
	}
	tee.Close()
	<-done
}

func TestSyslogHeader(t *testing.T) {
	ent := entry(&event.Event{Kind: event.Gap, Time: t0})
	for _, tt := range []struct {
		network, format, want string
	}{
		{"udp", FormatRFC5424, "<132>1 2026-11-25T10:00:00.123456Z web-1 connlogd 4242 gap - "},
		{"udp", FormatRFC3164, "<132>" + t0.Local().Format(time.Stamp) + " web-1 connlogd[4242]: "},
		// Local socket readers expect no hostname in RFC 3164.
		{"unix", FormatRFC3164, "<132>" + t0.Local().Format(time.Stamp) + " connlogd[4242]: "},
	} {
		s, err := newSyslogSink(syslogConfig{network: tt.network, format: tt.format, tag: DefaultTag, facility: DefaultFacility, host: "web-1", pid: 4242})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(s.header(nil, ent)); got != tt.want {
			t.Errorf("%s %s: header %q, want %q", tt.network, tt.format, got, tt.want)
		}
	}
	s, err := newSyslogSink(syslogConfig{network: "udp", format: FormatRFC5424, tag: "x", facility: 1, host: "bad host\n", pid: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(s.header(nil, entry(&event.Event{Kind: event.Appeared, Time: t0}))); got != "<14>1 2026-11-25T10:00:00.123456Z bad_host_ x 1 appeared - " {
		t.Errorf("sanitized header %q", got)
	}
}

// seqEvent is an event whose cookie numbers it.
func seqEvent(i int) *event.Event {
	e := &event.Event{Kind: event.Appeared, Time: t0, Socket: tcp4}
	e.Socket.Cookie = uint64(i)
	return e
}

// cookieOf returns the cookie in a received message's JSON.
func cookieOf(t *testing.T, frame []byte) uint64 {
	t.Helper()
	m, err := rfc5424.NewParser().Parse(frame)
	if err != nil {
		t.Fatalf("rfc5424: %v: %q", err, frame)
	}
	var body struct{ Cookie uint64 }
	if err := json.Unmarshal([]byte(*m.(*rfc5424.SyslogMessage).Message), &body); err != nil {
		t.Fatal(err)
	}
	return body.Cookie
}

// The receiver goes away and comes back on the same address. Writes keep
// being accepted (queued) meanwhile, the sender reconnects on its own,
// and every event is delivered once, in order.
func TestSyslogTCPReconnect(t *testing.T) {
	srv := startTCP(t, "127.0.0.1:0", nil)
	addr := srv.ln.Addr().String()
	tee, _ := syslogTee(t, config.Sink{Network: "tcp", Address: addr}, func(s *syslogSink) {
		s.tr.minBackoff, s.tr.maxBackoff = 5*time.Millisecond, 20*time.Millisecond
	})
	n := 0
	write := func(k int) {
		for range k {
			n++
			if err := tee.Write(seqEvent(n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(10)
	var got []uint64
	for range 10 {
		got = append(got, cookieOf(t, srv.frame(t)))
	}
	srv.stop()
	write(20) // the receiver is down: queued
	waitFor(t, func() bool { return tee.Sync() != nil })
	if err := tee.Sync(); !errors.Is(err, syscall.ECONNREFUSED) || !strings.HasPrefix(err.Error(), "sink syslog tcp "+addr+": dial: ") {
		t.Errorf("Sync with the receiver down = %v, want a dial error naming the sink", err)
	}
	srv2 := startTCP(t, addr, nil)
	write(10)
	for len(got) < n {
		got = append(got, cookieOf(t, srv2.frame(t)))
	}
	for i, c := range got {
		if c != uint64(i+1) {
			t.Fatalf("received cookies %v, want 1..%d in order", got, n)
		}
	}
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	if st := tee.Stats()[0]; st.Written != uint64(n) || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("stats %+v, want %d written", st, n)
	}
}

// With the receiver away, the queue fills to its size and further events
// are dropped and counted; Close gives up after the drain timeout and
// counts the queue as dropped too. Nothing blocks.
func TestSyslogQueueOverflow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	tee, _ := syslogTee(t, config.Sink{Network: "tcp", Address: addr, QueueSize: 5, DrainTimeout: 20 * time.Millisecond}, nil)
	var refused int
	for i := range 12 {
		err := tee.Write(seqEvent(i))
		if err != nil {
			refused++
			if err.Error() != "sink syslog tcp "+addr+": queue full (5 events): events dropped" {
				t.Errorf("Write = %v", err)
			}
		}
	}
	if refused != 7 {
		t.Errorf("%d writes refused, want 7", refused)
	}
	if st := tee.Stats()[0]; st.Queued != 5 || st.Dropped != 7 || st.DroppedBy[DropQueueFull] != 7 || tee.Dropped() != 7 {
		t.Errorf("stats %+v, want 7 dropped for a full queue", st)
	}
	err = tee.Close()
	if err == nil || !strings.Contains(err.Error(), "close: 5 events not delivered within 20ms: dial: ") {
		t.Errorf("Close = %v", err)
	}
	if st := tee.Stats()[0]; st.Written != 0 || st.Dropped != 12 || st.Queued != 0 ||
		st.DroppedBy != [NumDropReasons]uint64{DropQueueFull: 7, DropShutdown: 5} || st.Errors == 0 {
		t.Errorf("stats after Close %+v, want 7 dropped for a full queue, 5 at shutdown, the failed dials counted", st)
	}
}

// A receiver that accepts but never reads: once the socket buffers fill,
// the sender's write gives up at its deadline and says so, while Write
// goes on accepting; Close's drain timeout bounds the shutdown.
func TestSyslogWriteDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	tee, _ := syslogTee(t, config.Sink{Network: "tcp", Address: ln.Addr().String(), QueueSize: 100, DrainTimeout: 100 * time.Millisecond}, func(s *syslogSink) {
		s.tr.timeout = 100 * time.Millisecond
	})
	big := &event.Event{Kind: event.Gap, Time: t0, Reason: strings.Repeat("r", 60<<10)}
	var werr error
	produced := 0
	waitFor(t, func() bool {
		produced++
		if err := tee.Write(big); err != nil && !strings.Contains(err.Error(), "queue full") {
			t.Fatal(err)
		}
		werr = tee.Sync()
		return werr != nil
	})
	if !errors.Is(werr, os.ErrDeadlineExceeded) {
		t.Errorf("Sync = %v, want a deadline error", werr)
	}
	tee.Close()
	// The sender redials after the timeout, and the receiver accepts
	// (and never reads) each new connection, so what the kernel took
	// counts as written: TCP gives no better answer.
	st := tee.Stats()[0]
	if st.Queued != 0 || st.Written+st.Dropped != uint64(produced) {
		t.Errorf("stats %+v: want %d events written or dropped", st, produced)
	}
	ln.Close()
	<-acceptDone
	for _, c := range conns {
		c.Close()
	}
}

// Reopen makes the sender drop its connection and dial again at once.
func TestSyslogReopenRedials(t *testing.T) {
	srv := startTCP(t, "127.0.0.1:0", nil)
	tee, _ := syslogTee(t, config.Sink{Network: "tcp", Address: srv.ln.Addr().String()}, nil)
	if err := tee.Write(seqEvent(1)); err != nil {
		t.Fatal(err)
	}
	srv.frame(t)
	srv.mu.Lock()
	first := srv.conn
	srv.mu.Unlock()
	if err := tee.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := tee.Write(seqEvent(2)); err != nil {
		t.Fatal(err)
	}
	if c := cookieOf(t, srv.frame(t)); c != 2 {
		t.Errorf("cookie %d", c)
	}
	srv.mu.Lock()
	second := srv.conn
	srv.mu.Unlock()
	if first == second {
		t.Error("the event after Reopen came on the old connection")
	}
}

// waitFor waits until cond holds, failing the test after 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	if !waitUntil(10*time.Second, cond) {
		t.Fatal("condition not met in 10s")
	}
}

// waitUntil polls cond until it holds or timeout passes, and reports
// whether it held. The machine may be busy: callers give generous
// timeouts, and nothing is slept on and then asserted.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	for end := time.Now().Add(timeout); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			return false
		}
	}
	return true
}

func TestSyslogConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		s    config.Sink
		want string
	}{
		{config.Sink{Type: "kafka", Line: 3}, `sink (config line 3): unknown type "kafka"`},
		{config.Sink{Type: config.SinkFile}, "sink file: no path"},
		{config.Sink{Type: config.SinkSyslog, Network: "tcp"}, "sink syslog: network tcp needs an address"},
		{config.Sink{Type: config.SinkSyslog, Network: "tls"}, "sink syslog: network tls needs an address"},
		{config.Sink{Type: config.SinkSyslog, Network: "udp", Address: "host"}, `sink syslog: address: "host" is not host:port: missing port in address`},
		{config.Sink{Type: config.SinkSyslog, Network: "sctp", Line: 9}, `sink syslog (config line 9): unknown network "sctp" (want unix, udp, tcp, tls, relp or relp-tls)`},
		{config.Sink{Type: config.SinkSyslog, Network: "tcp", Address: "h:1", TLS: config.TLS{CAFile: "x"}}, "sink syslog: tls settings need network tls or relp-tls, not tcp"},
		{config.Sink{Type: config.SinkSyslog, Format: "json"}, `sink syslog: unknown format "json" (want rfc5424 or rfc3164)`},
		{config.Sink{Type: config.SinkSyslog, Tag: "a b"}, `sink syslog: tag: "a b" must be printable ASCII without spaces, brackets or colons`},
		// The rule is config's: what -check-config accepts, the sink opens.
		{config.Sink{Type: config.SinkSyslog, Tag: "app:1"}, `sink syslog: tag: "app:1" must be printable ASCII without spaces, brackets or colons`},
		{config.Sink{Type: config.SinkSyslog, Facility: 24}, "sink syslog: facility: 24 is out of range 0-23"},
		{config.Sink{Type: config.SinkStdout, Schema: "cef"}, `sink stdout: unknown schema "cef" (want native, ecs or ocsf)`},
	} {
		_, err := New([]config.Sink{tt.s}, "h")
		if err == nil || err.Error() != tt.want {
			t.Errorf("%+v: error %v, want %q", tt.s, err, tt.want)
		}
	}
	if _, err := New(nil, "h"); err == nil {
		t.Error("New without sinks succeeded")
	}
}

// Several sinks get every event; a failing one does not stop the others
// and its failure is reported by Sync and counted at Close.
func TestTeeFanOut(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "events.json")
	dead := filepath.Join(dir, "nobody")
	tee, err := New([]config.Sink{
		{Type: config.SinkFile, Path: path},
		{Type: config.SinkSyslog, Network: "unix", Address: dead, DrainTimeout: 10 * time.Millisecond},
		{Type: config.SinkSyslog, Network: "udp", Address: pc.LocalAddr().String()},
	}, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	defer tee.Close()
	if err := tee.Write(gapAt("x")); err != nil {
		t.Fatal(err)
	}
	readDatagrams(t, pc, 1)
	var serr error
	waitFor(t, func() bool { serr = tee.Sync(); return serr != nil })
	if !strings.Contains(serr.Error(), "sink syslog unix "+dead+": dial: ") {
		t.Errorf("Sync = %v, want the unix sink's dial error", serr)
	}
	if got := reasonsIn(t, path); !equal(got, []string{"x"}) {
		t.Errorf("file: %v", got)
	}
	cerr := tee.Close()
	if cerr == nil || !strings.Contains(cerr.Error(), "sink syslog unix "+dead+": close: 1 events not delivered") {
		t.Errorf("Close = %v", cerr)
	}
	st := tee.Stats()
	if st[0].Written != 1 || st[1].Dropped != 1 || st[2].Written != 1 || tee.Dropped() != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A mutual-TLS receiver refuses a client without a certificate, in TLS
// 1.3 after the client's side of the handshake has ended: the events
// stay queued, Sync says why, and Close counts them as dropped. Before,
// the receiver's kernel acknowledged them and the sink counted them
// written while the receiver discarded them.
func TestSyslogTLSRefusedAfterHandshake(t *testing.T) {
	pki := newTestPKI(t)
	srv := startTCP(t, "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pki.serverPair}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool,
	})
	tee, _ := syslogTee(t, config.Sink{Network: "tls", Address: srv.ln.Addr().String(), TLS: config.TLS{CAFile: pki.caFile}, DrainTimeout: 50 * time.Millisecond}, nil)
	if err := tee.Write(gapAt("x")); err != nil {
		t.Fatal(err)
	}
	var err error
	waitFor(t, func() bool { err = tee.Sync(); return err != nil })
	if !strings.Contains(err.Error(), "refused the session after the handshake") {
		t.Errorf("Sync = %v, want the refusal", err)
	}
	err = tee.Close()
	if err == nil || !strings.Contains(err.Error(), "close: 1 events not delivered") {
		t.Errorf("Close = %v", err)
	}
	if st := tee.Stats()[0]; st.Written != 0 || st.Dropped != 1 || st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
}
