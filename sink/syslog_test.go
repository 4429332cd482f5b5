package sink

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
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

func syslogTee(t *testing.T, s config.Sink) (*Tee, *syslogSink) {
	t.Helper()
	s.Type = config.SinkSyslog
	tee, err := New([]config.Sink{s}, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tee.Close() })
	return tee, tee.outs[0].(*syslogSink)
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
	tee, _ := syslogTee(t, config.Sink{Network: "udp", Address: pc.LocalAddr().String(), Tag: "cl-test"})
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i, d := range readDatagrams(t, pc, len(evs)) {
		checkMessage(t, parse5424(t, d), &evs[i], "cl-test", true)
	}
	if st := tee.Stats()[0]; st.Written != uint64(len(evs)) || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSyslogUDP3164(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tee, _ := syslogTee(t, config.Sink{Network: "udp", Address: pc.LocalAddr().String(), Format: FormatRFC3164})
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
	tee, _ := syslogTee(t, config.Sink{Address: path}) // network defaults to unix
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i, d := range readDatagrams(t, pc, len(evs)) {
		checkMessage(t, parse5424(t, d), &evs[i], DefaultTag, true)
	}
}

// tcpServer collects what its clients send, one connection at a time.
type tcpServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn net.Conn
	raw  bytes.Buffer
	in   chan []byte // frames, split by octet counting
}

func startTCP(t *testing.T, addr string) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{ln: ln, in: make(chan []byte, 1000)}
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
	case <-time.After(5 * time.Second):
		t.Fatal("no frame received")
		return nil
	}
}

func TestSyslogTCPOctetCounting(t *testing.T) {
	srv := startTCP(t, "127.0.0.1:0")
	tee, _ := syslogTee(t, config.Sink{Network: "tcp", Address: srv.ln.Addr().String()})
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i := range evs {
		checkMessage(t, parse5424(t, srv.frame(t)), &evs[i], DefaultTag, true)
	}
	// The whole stream, through go-syslog's own octet-counting parser.
	tee.Close()
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
	tee, _ := syslogTee(t, config.Sink{Network: "unix", Address: path})
	evs := kindsEvents()
	writeEvents(t, tee, evs)
	for i := range evs {
		select {
		case l := <-lines:
			checkMessage(t, parse5424(t, []byte(l)), &evs[i], DefaultTag, true)
		case <-time.After(5 * time.Second):
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
		s := newSyslogSink(syslogConfig{network: tt.network, format: tt.format, tag: DefaultTag, facility: DefaultFacility, host: "web-1", pid: 4242})
		if got := string(s.header(nil, ent)); got != tt.want {
			t.Errorf("%s %s: header %q, want %q", tt.network, tt.format, got, tt.want)
		}
	}
	s := newSyslogSink(syslogConfig{network: "udp", format: FormatRFC5424, tag: "x", facility: 1, host: "bad host\n", pid: 1})
	if got := string(s.header(nil, entry(&event.Event{Kind: event.Appeared, Time: t0}))); got != "<14>1 2026-11-25T10:00:00.123456Z bad_host_ x 1 appeared - " {
		t.Errorf("sanitized header %q", got)
	}
}

// The receiver goes away and comes back on the same address: the first
// write notices the closed connection, fails to redial and is counted;
// writes fail fast while backing off; after the receiver is back a write
// reconnects and succeeds.
func TestSyslogTCPReconnect(t *testing.T) {
	srv := startTCP(t, "127.0.0.1:0")
	addr := srv.ln.Addr().String()
	tee, ss := syslogTee(t, config.Sink{Network: "tcp", Address: addr})
	ss.tr.minBackoff, ss.tr.maxBackoff = 20*time.Millisecond, 50*time.Millisecond
	ev := func(cookie uint64) *event.Event {
		e := &event.Event{Kind: event.Appeared, Time: t0, Socket: tcp4}
		e.Socket.Cookie = cookie
		return e
	}
	if err := tee.Write(ev(1)); err != nil {
		t.Fatal(err)
	}
	srv.frame(t)

	srv.stop()
	waitFor(t, func() bool { return peerClosed(ss.tr.conn) })
	err := tee.Write(ev(2))
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.HasPrefix(err.Error(), "sink syslog tcp "+addr+": dial: ") {
		t.Fatalf("write to a stopped receiver = %v, want a dial error naming the sink", err)
	}
	failed := 1
	for i := range 3 {
		if err := tee.Write(ev(uint64(3 + i))); err == nil {
			t.Fatal("write succeeded with the receiver down")
		}
		failed++
	}
	if d := tee.Dropped(); d != uint64(failed) {
		t.Errorf("Dropped = %d, want %d", d, failed)
	}

	srv2 := startTCP(t, addr)
	var werr error
	deadline := time.Now().Add(5 * time.Second)
	for {
		start := time.Now()
		werr = tee.Write(ev(100))
		if took := time.Since(start); took > sendTimeout+time.Second {
			t.Fatalf("a write blocked %v", took)
		}
		if werr == nil || time.Now().After(deadline) {
			break
		}
		failed++
		time.Sleep(5 * time.Millisecond)
	}
	if werr != nil {
		t.Fatalf("no reconnect: %v", werr)
	}
	checkMessage(t, parse5424(t, srv2.frame(t)), ev(100), DefaultTag, true)
	if st := tee.Stats()[0]; st.Written != 2 || st.Dropped != uint64(failed) {
		t.Errorf("stats %+v, want 2 written, %d dropped", st, failed)
	}
}

// A receiver that accepts but never reads: once the socket buffers fill,
// a write gives up at the deadline instead of blocking the poll loop.
func TestSyslogWriteDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	tee, ss := syslogTee(t, config.Sink{Network: "tcp", Address: ln.Addr().String()})
	ss.tr.timeout = 200 * time.Millisecond
	big := &event.Event{Kind: event.Gap, Time: t0, Reason: strings.Repeat("r", 60<<10)}
	for i := 0; ; i++ {
		start := time.Now()
		err := tee.Write(big)
		if took := time.Since(start); took > time.Second {
			t.Fatalf("write %d blocked %v", i, took)
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("error %v, want a deadline error", err)
			}
			break
		}
		if i > 10000 {
			t.Fatal("the socket never filled")
		}
	}
	if c := <-accepted; c != nil {
		c.Close()
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSyslogConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		s    config.Sink
		want string
	}{
		{config.Sink{Type: "kafka", Line: 3}, `sink (config line 3): unknown type "kafka"`},
		{config.Sink{Type: config.SinkFile}, "sink file: no path"},
		{config.Sink{Type: config.SinkSyslog, Network: "tcp"}, "sink syslog: network tcp needs an address"},
		{config.Sink{Type: config.SinkSyslog, Network: "udp", Address: "host"}, "sink syslog: address: address host: missing port in address"},
		{config.Sink{Type: config.SinkSyslog, Network: "sctp", Line: 9}, `sink syslog (config line 9): unknown network "sctp" (want unix, udp or tcp)`},
		{config.Sink{Type: config.SinkSyslog, Format: "json"}, `sink syslog: unknown format "json" (want rfc5424 or rfc3164)`},
		{config.Sink{Type: config.SinkSyslog, Tag: "a b"}, `sink syslog: tag "a b": want 1 to 48 printable ASCII characters without spaces, brackets or colons`},
		{config.Sink{Type: config.SinkSyslog, Facility: 24}, "sink syslog: facility 24 out of range 0-23"},
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
// and the error names it.
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
		{Type: config.SinkSyslog, Network: "unix", Address: dead},
		{Type: config.SinkSyslog, Network: "udp", Address: pc.LocalAddr().String()},
	}, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	defer tee.Close()
	err = tee.Write(gapAt("x"))
	if err == nil || !strings.Contains(err.Error(), "sink syslog unix "+dead+": dial: ") {
		t.Errorf("Write = %v, want the unix sink's dial error", err)
	}
	if err := tee.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := reasonsIn(t, path); !equal(got, []string{"x"}) {
		t.Errorf("file: %v", got)
	}
	readDatagrams(t, pc, 1)
	st := tee.Stats()
	if st[0].Written != 1 || st[1].Dropped != 1 || st[2].Written != 1 || tee.Dropped() != 1 {
		t.Errorf("stats %+v", st)
	}
}
