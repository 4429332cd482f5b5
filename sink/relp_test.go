package sink

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
)

func TestReadRELP(t *testing.T) {
	for _, tt := range []struct {
		name, in    string
		txnr        uint64
		cmd, data   string
		wantErr     string // substring; "" for none
		wantEOF     bool
		wantUnexpEO bool
	}{
		{name: "answer", in: "7 rsp 6 200 OK\n", txnr: 7, cmd: "rsp", data: "200 OK"},
		{name: "no data", in: "0 serverclose 0\n", txnr: 0, cmd: "serverclose"},
		{name: "zero length with a space", in: "3 rsp 0 \n", txnr: 3, cmd: "rsp"},
		{name: "data holding newlines", in: "1 rsp 22 200 OK\nrelp_version=0\n\n", txnr: 1, cmd: "rsp", data: "200 OK\nrelp_version=0\n"},
		{name: "clean end between frames", in: "", wantEOF: true},
		{name: "cut in the header", in: "12 rs", wantUnexpEO: true},
		{name: "cut after the transaction number", in: "12 ", wantUnexpEO: true},
		{name: "cut in the data", in: "1 rsp 6 200", wantUnexpEO: true},
		{name: "no trailer", in: "1 rsp 6 200 OKX", wantErr: "without its trailer"},
		{name: "length and data disagree", in: "1 rsp 2\n", wantErr: "bad data length"},
		{name: "letters in the length", in: "1 rsp 6x 200 OK\n", wantErr: "bad data length"},
		{name: "empty length", in: "1 rsp  200 OK\n", wantErr: "bad data length"},
		{name: "bad transaction number", in: "x1 rsp 0\n", wantErr: "bad transaction number"},
		{name: "transaction number too long", in: "1234567890 rsp 0\n", wantErr: "bad header field"},
		{name: "control character in the command", in: "1 r\x01p 0\n", wantErr: "bad header field"},
		{name: "oversized frame", in: "1 rsp 999999999 x\n", wantErr: "frame of"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, _, err := readRELP(bufio.NewReader(strings.NewReader(tt.in)), nil)
			switch {
			case tt.wantEOF:
				if err != io.EOF {
					t.Fatalf("err %v, want io.EOF", err)
				}
			case tt.wantUnexpEO:
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("err %v, want io.ErrUnexpectedEOF", err)
				}
			case tt.wantErr != "":
				if err == nil || !errors.Is(err, errRELP) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want a relp error with %q", err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if f.txnr != tt.txnr || f.cmd != tt.cmd || string(f.data) != tt.data {
					t.Fatalf("got %d %q %q, want %d %q %q", f.txnr, f.cmd, f.data, tt.txnr, tt.cmd, tt.data)
				}
			}
		})
	}
}

func TestRELPAnswer(t *testing.T) {
	for _, tt := range []struct {
		name    string
		f       relpFrame
		seq     uint64
		wantErr string
	}{
		{"accepted", relpFrame{txnr: 5, cmd: "rsp", data: []byte("200 OK")}, 5, ""},
		{"wrapped transaction number", relpFrame{txnr: 1, cmd: "rsp", data: []byte("200 OK")}, relpMaxTxnr + 1, ""},
		{"refused", relpFrame{txnr: 5, cmd: "rsp", data: []byte("500 queue full")}, 5, "refused by the receiver: transaction 5: 500 queue full"},
		{"status not a code", relpFrame{txnr: 5, cmd: "rsp", data: []byte("OK")}, 5, "refused"},
		{"out of order", relpFrame{txnr: 6, cmd: "rsp", data: []byte("200 OK")}, 5, "expected 5"},
		{"server closing", relpFrame{txnr: 0, cmd: "serverclose"}, 5, "closing the session"},
		{"another command", relpFrame{txnr: 5, cmd: "syslog"}, 5, "unexpected"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := relpAnswer(tt.f, tt.seq)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
	if err := relpOfferAccepted([]byte("200 OK\nrelp_version=0\ncommands=syslog")); err != nil {
		t.Error(err)
	}
	if err := relpOfferAccepted([]byte("200 OK\ncommands=other")); err == nil {
		t.Error("an offer without syslog was accepted")
	}
}

// relpServer is a scripted RELP receiver: answer decides, per received
// syslog message (its cookie), whether to answer it, to stop reading and
// close the connection without answering (a receiver going away with
// frames unread), or to refuse it.
type relpServer struct {
	t      *testing.T
	ln     net.Listener
	mu     sync.Mutex
	got    []uint64 // cookies answered 200, in order
	answer func(conn int, cookie uint64) string
	conns  int
	wg     sync.WaitGroup
}

func startRELP(t *testing.T, answer func(conn int, cookie uint64) string) *relpServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &relpServer{t: t, ln: ln, answer: answer}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			n := s.conns
			s.mu.Unlock()
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(n, c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *relpServer) serve(n int, c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		f, _, err := readRELP(br, nil)
		if err != nil {
			return
		}
		switch f.cmd {
		case "open":
			fmt.Fprintf(c, "%d rsp %d 200 OK\ncommands=syslog", f.txnr, len("200 OK\ncommands=syslog"))
			c.Write([]byte{'\n'})
		case "close":
			fmt.Fprintf(c, "%d rsp 0\n0 serverclose 0\n", f.txnr)
			return
		case "syslog":
			cookie := cookieOf(s.t, f.data)
			switch s.answer(n, cookie) {
			case "close":
				// As librelp does when it stops: say so, stop sending,
				// read no more. Frames unread then are never answered.
				fmt.Fprintf(c, "0 serverclose 0\n")
				c.(*net.TCPConn).CloseWrite()
				c.SetReadDeadline(time.Now().Add(time.Second))
				io.Copy(io.Discard, c)
				return
			case "reset":
				// Gone at once: the kernel answers the unread frames
				// with a reset, which also discards the answers the
				// sender had not read yet.
				c.(*net.TCPConn).SetLinger(0)
				return
			case "refuse":
				fmt.Fprintf(c, "%d rsp 13 500 try later\n", f.txnr)
			case "silent": // takes it, never answers
			default: // "": answer it
				s.mu.Lock()
				s.got = append(s.got, cookie)
				s.mu.Unlock()
				fmt.Fprintf(c, "%d rsp 6 200 OK\n", f.txnr)
			}
		}
	}
}

func (s *relpServer) received() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.got...)
}

// Whatever a connection did not answer is sent again on the next, once,
// in order; a message the receiver refuses is counted as dropped, the
// rest go on. The counters end exact.
func TestRELPResendsUnanswered(t *testing.T) {
	type at struct{ conn, cookie uint64 } // conn 0: any connection
	for _, tt := range []struct {
		name    string
		script  map[at]string // what the receiver does instead of answering
		conns   int
		refused uint64 // the cookie refused, 0 for none
	}{
		{"receiver goes away mid-stream", map[at]string{{1, 40}: "close"}, 2, 0},
		{"receiver goes away twice", map[at]string{{1, 10}: "close", {2, 60}: "close"}, 3, 0},
		{"receiver resets the connection: every message at least once", map[at]string{{1, 40}: "reset"}, 2, 0},
		{"receiver refuses a message", map[at]string{{0, 17}: "refuse"}, 1, 17},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startRELP(t, func(conn int, cookie uint64) string {
				if a, ok := tt.script[at{uint64(conn), cookie}]; ok {
					return a
				}
				return tt.script[at{0, cookie}]
			})
			tee, _ := syslogTee(t, config.Sink{Network: "relp", Address: srv.ln.Addr().String()}, func(s *syslogSink) {
				s.tr.minBackoff, s.tr.maxBackoff = 5*time.Millisecond, 20*time.Millisecond
			})
			const n = 100
			var want []uint64
			for i := 1; i <= n; i++ {
				if err := tee.Write(seqEvent(i)); err != nil {
					t.Fatal(err)
				}
				if uint64(i) != tt.refused {
					want = append(want, uint64(i))
				}
			}
			if !waitUntil(10*time.Second, func() bool { return len(srv.received()) >= len(want) }) {
				t.Fatalf("received %d of %d in 10s; Sync: %v; stats %+v", len(srv.received()), len(want), tee.Sync(), tee.Stats()[0])
			}
			err := tee.Close()
			if tt.refused == 0 && err != nil {
				t.Fatal(err)
			}
			// The refusal is counted when its answer is taken: while
			// sending, or while closing, which then reports it.
			if tt.refused != 0 && err != nil && !strings.Contains(err.Error(), "1 events not delivered: relp: message refused by the receiver: transaction 18: 500 try later") {
				t.Errorf("Close = %v, want nil or the refusal reported", err)
			}
			got := srv.received()
			if strings.Contains(tt.name, "at least once") {
				// Answers lost to the reset come again: what the
				// second connection received is the first's tail and
				// the rest, in order.
				seen := map[uint64]bool{}
				for _, c := range got {
					seen[c] = true
				}
				if len(seen) != len(want) || got[len(got)-1] != n {
					t.Fatalf("received %v, want each of 1..%d at least once", got, n)
				}
				t.Logf("%d duplicates after the reset", len(got)-len(want))
			} else if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("received %v, want %v: each once, in order", got, want)
			}
			dropped := uint64(0)
			if tt.refused != 0 {
				dropped = 1
			}
			if st := tee.Stats()[0]; st.Written != uint64(len(want)) || st.Dropped != dropped || st.DroppedBy[DropRefused] != dropped || st.Queued != 0 {
				t.Errorf("stats %+v, want %d written, %d dropped", st, len(want), dropped)
			}
			srv.mu.Lock()
			conns := srv.conns
			srv.mu.Unlock()
			if conns != tt.conns {
				t.Errorf("%d connections, want %d", conns, tt.conns)
			}
		})
	}
}

// A receiver that opens sessions and closes them at the first message,
// unanswered, is backed off from: the sender does not redial in a loop.
func TestRELPReceiverClosingAtOnceIsBackedOff(t *testing.T) {
	srv := startRELP(t, func(int, uint64) string { return "close" })
	tee, _ := syslogTee(t, config.Sink{Network: "relp", Address: srv.ln.Addr().String(), DrainTimeout: 100 * time.Millisecond},
		func(s *syslogSink) { s.tr.minBackoff, s.tr.maxBackoff = 20*time.Millisecond, 200*time.Millisecond })
	if err := tee.Write(seqEvent(1)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	srv.mu.Lock()
	conns := srv.conns
	srv.mu.Unlock()
	// Backing off from 20 ms, doubling up to 200 ms (±20%): about 8
	// sessions in a second, never more than 12.
	if conns < 2 || conns > 12 {
		t.Errorf("%d sessions in 1 s, want 2 to 12", conns)
	}
	if err := tee.Sync(); !errors.Is(err, errPeerClosed) {
		t.Errorf("Sync = %v, want the receiver's closes reported", err)
	}
	tee.Close()
	if st := tee.Stats()[0]; st.Written != 0 || st.Dropped != 1 || st.DroppedBy[DropShutdown] != 1 || st.Errors < 2 {
		t.Errorf("stats %+v, want the event dropped at shutdown, the failures counted", st)
	}
}

// A receiver that takes messages but never answers holds at most the
// window; the sink gives up on it after the write timeout and counts the
// unanswered messages as dropped when the drain time is up, not as
// written.
func TestRELPUnansweredIsNotWritten(t *testing.T) {
	srv := startRELP(t, func(int, uint64) string { return "silent" })
	tee, err := prepare([]config.Sink{{Type: config.SinkSyslog, Network: "relp", Address: srv.ln.Addr().String(),
		DrainTimeout: 300 * time.Millisecond}}, Options{Host: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	ss := tee.outs[0].(*syslogSink)
	ss.tr.timeout = 200 * time.Millisecond
	tee.start()
	const n = relpWindow + 50
	for i := 1; i <= n; i++ {
		if err := tee.Write(seqEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return tee.Sync() != nil })
	if err := tee.Sync(); !errors.Is(err, errRELP) || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("Sync = %v, want the missing answers reported", err)
	}
	if err := tee.Close(); err == nil {
		t.Error("Close reported no undelivered events")
	}
	if st := tee.Stats()[0]; st.Written != 0 || st.Dropped != n || st.Queued != 0 {
		t.Errorf("stats %+v, want all %d dropped, none written", st, n)
	}
}
