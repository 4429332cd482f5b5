package sink

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// These tests run a real rsyslogd (Debian's rsyslog and rsyslog-gnutls)
// as a child process with its own configuration in a temporary
// directory, listening on a free loopback port and writing every message
// it receives, raw, to a file.

// needComponent skips a test whose outside component is missing, or
// fails it when CI requires every component (CONNLOGD_REQUIRE_NETNS=1).
func needComponent(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
		t.Fatalf("%s is required here (CONNLOGD_REQUIRE_NETNS=1): %v", what, err)
	}
	t.Skipf("%s unavailable: %v", what, err)
}

func rsyslogdPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("rsyslogd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/rsyslogd"); serr == nil {
			path, err = "/usr/sbin/rsyslogd", nil
		}
	}
	needComponent(t, "rsyslogd (Debian package rsyslog)", err)
	return path
}

// rsyslog is one rsyslogd configuration; start and stop run it.
type rsyslog struct {
	t    *testing.T
	bin  string
	dir  string
	mode string // udp, tcp, relp, relp-tls, tls (server authenticated) or mtls (client certificate required)
	port int
	out  string // the messages received, one per line
	proc *receiver
}

func newRsyslog(t *testing.T, mode string, pki *testPKI) *rsyslog {
	t.Helper()
	r := &rsyslog{t: t, bin: rsyslogdPath(t), dir: t.TempDir(), mode: mode}
	r.out = filepath.Join(r.dir, "received.log")
	r.port = freePort(t, mode == "udp")
	var input string
	switch mode {
	case "udp":
		input = `module(load="imudp")
input(type="imudp" address="127.0.0.1" port="%d" ruleset="net")`
	case "tcp":
		input = `module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="net")`
	case "relp":
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/imrelp.so"); len(m) == 0 {
			needComponent(t, "rsyslog's imrelp (Debian package rsyslog-relp)", errors.New("no imrelp.so"))
		}
		input = `module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="%d" ruleset="net")`
	case "relp-tls":
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/imrelp.so"); len(m) == 0 {
			needComponent(t, "rsyslog's imrelp (Debian package rsyslog-relp)", errors.New("no imrelp.so"))
		}
		// librelp checks the client's certificate against the CA
		// (certvalid): RELP over TLS is mutual.
		input = fmt.Sprintf(`module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="%%d" ruleset="net" tls="on"
  tls.caCert="%s" tls.myCert="%s" tls.myPrivKey="%s" tls.authMode="certvalid")`, pki.caFile, pki.serverCert, pki.serverKey)
	case "tls", "mtls":
		auth := "anon" // the client checks the server; the server asks nothing
		if mode == "mtls" {
			auth = "x509/certvalid" // a client certificate signed by the CA is required
		}
		input = fmt.Sprintf(`global(DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="%s"
  DefaultNetstreamDriverCertFile="%s"
  DefaultNetstreamDriverKeyFile="%s")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="%s")
`, pki.caFile, pki.serverCert, pki.serverKey, auth) + `input(type="imtcp" address="127.0.0.1" port="%d" ruleset="net")`
	}
	conf := fmt.Sprintf(`global(workDirectory="%s" maxMessageSize="64k")
`+input+`
template(name="raw" type="string" string="%%rawmsg%%\n")
# rsyslogd's own messages go to the default ruleset, which has no action.
ruleset(name="net") {
  action(type="omfile" file="%s" template="raw")
}
`, r.dir, r.port, r.out)
	if err := os.WriteFile(filepath.Join(r.dir, "rsyslog.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T, udp bool) int {
	t.Helper()
	if udp {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (r *rsyslog) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

func (r *rsyslog) start() {
	r.t.Helper()
	cmd := exec.Command(r.bin, "-n", "-f", filepath.Join(r.dir, "rsyslog.conf"), "-i", filepath.Join(r.dir, "rsyslogd.pid"))
	r.proc = startReceiver(r.t, "rsyslogd", cmd, filepath.Join(r.dir, "rsyslogd.stderr"), 15*time.Second,
		func() bool { return portBound(r.port, r.mode == "udp") }, fmt.Sprintf("rsyslogd did not bind port %d", r.port))
}

// stop ends rsyslogd (receiver.stop).
func (r *rsyslog) stop() { r.proc.stop() }

// portBound reports whether 127.0.0.1:port is bound: listening for TCP.
func portBound(port int, udp bool) bool {
	file, state := "/proc/net/tcp", "0A"
	if udp {
		file, state = "/proc/net/udp", "07"
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && f[1] == want && f[3] == state {
			return true
		}
	}
	return false
}

// lines returns the messages rsyslogd has written so far.
func (r *rsyslog) lines() []string { return completeLines(r.out) }

// waitLines waits until rsyslogd has written n messages (it writes each
// batch as it ends) and returns them.
func (r *rsyslog) waitLines(n int) []string {
	r.t.Helper()
	var got []string
	waitUntil(20*time.Second, func() bool { got = r.lines(); return len(got) >= n })
	if len(got) != n {
		r.t.Fatalf("rsyslogd wrote %d messages, want %d", len(got), n)
	}
	return got
}

// parseReceived parses one received message as RFC 5424 and returns it
// with its MSG decoded.
func parseReceived(t *testing.T, line string) (*rfc5424.SyslogMessage, map[string]any) {
	t.Helper()
	m, err := rfc5424.NewParser().Parse([]byte(line))
	if err != nil {
		t.Fatalf("not RFC 5424: %v: %q", err, line)
	}
	msg := m.(*rfc5424.SyslogMessage)
	if msg.Message == nil {
		t.Fatalf("no MSG: %q", line)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(*msg.Message), &body); err != nil {
		t.Fatalf("MSG is not JSON: %v: %q", err, *msg.Message)
	}
	return msg, body
}

func TestRsyslogReceives(t *testing.T) {
	pki := newTestPKI(t)
	for _, mode := range []string{"tls", "mtls", "tcp", "relp", "relp-tls", "udp"} {
		t.Run(mode, func(t *testing.T) {
			r := newRsyslog(t, mode, pki)
			r.start()
			spec := config.Sink{Type: config.SinkSyslog, Network: mode, Address: r.addr()}
			switch mode {
			case "tls":
				spec.TLS = config.TLS{CAFile: pki.caFile}
			case "mtls":
				spec.Network = "tls"
				fallthrough
			case "relp-tls":
				spec.TLS = config.TLS{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}
			}
			tee, err := New([]config.Sink{spec}, "web-1")
			if err != nil {
				t.Fatal(err)
			}
			defer tee.Close()
			// Every kind, then numbered events; UDP gets fewer so that
			// the loopback socket buffer cannot overflow.
			evs := kindsEvents()
			n := 500
			if mode == "udp" {
				n = 50
			}
			for i := range n {
				evs = append(evs, *seqEvent(1000 + i))
			}
			writeEvents(t, tee, evs)
			if err := tee.Close(); err != nil {
				t.Fatal(err)
			}
			if st := tee.Stats()[0]; st.Written != uint64(len(evs)) || st.Dropped != 0 {
				t.Fatalf("stats %+v", st)
			}
			lines := r.waitLines(len(evs))
			for i, l := range lines {
				msg, body := parseReceived(t, l)
				checkMessage(t, &msg.Base, &evs[i], DefaultTag, true)
				if h := msg.Hostname; h == nil || *h != "web-1" {
					t.Errorf("hostname %v", h)
				}
				if ev := &evs[i]; ev.Kind == event.Appeared && uint64(body["cookie"].(float64)) != ev.Socket.Cookie {
					t.Errorf("message %d: cookie %v, want %d", i, body["cookie"], ev.Socket.Cookie)
				}
			}
			t.Logf("%s: rsyslogd received %d messages, every one RFC 5424 with the event JSON as MSG", mode, len(lines))
		})
	}
}

// rsyslogd stops for 10 s and starts again while events flow. The sink
// keeps accepting, reconnects on its own, and every event is either
// received by rsyslogd or counted as dropped: exactly over RELP, and
// over TCP and TLS up to what rsyslogd's kernel took and rsyslogd never
// read.
func TestRsyslogRestart(t *testing.T) {
	pki := newTestPKI(t)
	for _, mode := range []string{"relp", "relp-tls", "tls", "tcp"} {
		t.Run(mode, func(t *testing.T) {
			r := newRsyslog(t, mode, pki)
			r.start()
			spec := config.Sink{Type: config.SinkSyslog, Network: mode, Address: r.addr(),
				// Smaller than the 10 s outage's events, so that the
				// queue overflows and drops are counted too.
				QueueSize: 2000}
			switch mode {
			case "tls":
				spec.TLS = config.TLS{CAFile: pki.caFile}
			case "relp-tls":
				spec.TLS = config.TLS{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}
			}
			tee, err := prepare([]config.Sink{spec}, Options{Host: "web-1"})
			if err != nil {
				t.Fatal(err)
			}
			ss := tee.outs[0].(*syslogSink)
			ss.tr.maxBackoff = 2 * time.Second // reconnect soon after the restart
			tee.start()
			defer tee.Close()

			var produced, refused atomic.Int64
			var refusedSeq []int // the producer's, read after wg.Wait
			var maxWrite atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(2 * time.Millisecond) // about 500 events/s
				defer tick.Stop()
				for i := 1; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					start := time.Now()
					if err := tee.Write(seqEvent(i)); err != nil {
						refused.Add(1)
						refusedSeq = append(refusedSeq, i)
					}
					if d := int64(time.Since(start)); d > maxWrite.Load() {
						maxWrite.Store(d)
					}
					produced.Add(1)
				}
			}()

			time.Sleep(2 * time.Second)
			var watch *unreadWatch
			if !strings.HasPrefix(mode, "relp") {
				watch = watchUnread(t, r.port)
			}
			r.stop()
			stopped := produced.Load()
			beforeOutage := r.lines()
			var unread uint64
			var unreadConns int
			if watch != nil {
				unread, unreadConns = watch.unread()
			}
			time.Sleep(10 * time.Second)
			st := tee.Stats()[0]
			syncErr := tee.Sync()
			r.start()
			time.Sleep(5 * time.Second)
			close(stop)
			wg.Wait()
			closeErr := tee.Close()
			final := tee.Stats()[0]
			r.stop()

			// During the outage the sink queued (writes returned) and
			// said why it could not deliver.
			if st.Queued == 0 || syncErr == nil {
				t.Errorf("during the outage: stats %+v, Sync %v; want events queued and the failure reported", st, syncErr)
			}
			seen := map[uint64]int{}
			for _, l := range r.lines() {
				_, body := parseReceived(t, l)
				seen[uint64(body["cookie"].(float64))]++
			}
			dups := 0
			for _, n := range seen {
				dups += n - 1
			}
			delivered := uint64(len(seen))
			t.Logf("%s: produced %d, delivered %d (%d before the outage), dropped %d (%d refused by the full queue), duplicates %d; written %d, queued at the end %d; longest Write %v; close: %v",
				mode, produced.Load(), delivered, len(beforeOutage), final.Dropped, refused.Load(), dups, final.Written, final.Queued,
				time.Duration(maxWrite.Load()), closeErr)
			// Syslog over TCP has no acknowledgements: what rsyslogd's
			// kernel acknowledged but rsyslogd never read when it exited
			// is lost unseen, and a message reclaimed from the dead
			// connection may have been read after all (then it comes
			// twice). The sink reclaims and resends whatever was not
			// acknowledged (docs/delivery.md), so the loss is at most
			// what rsyslogd's kernel held unread, which depends on how
			// far behind rsyslogd was reading: on a busy machine,
			// thousands of messages. RELP closes the window: rsyslogd
			// answers each message once it holds it.
			lost := int64(produced.Load()) - int64(delivered) - int64(final.Dropped)
			isRefused := map[int]bool{}
			for _, i := range refusedSeq {
				isRefused[i] = true
			}
			var missing []int // numbered from 1
			for i := 1; i <= int(produced.Load()); i++ {
				if seen[uint64(i)] == 0 && !isRefused[i] {
					missing = append(missing, i)
				}
			}
			if strings.HasPrefix(mode, "relp") {
				if lost != 0 || dups != 0 || final.Written != delivered {
					t.Errorf("%s: delivered %d + dropped %d vs produced %d: %d unaccounted %s, %d duplicates, sink counted %d written; want exact",
						mode, delivered, final.Dropped, produced.Load(), lost, runs(missing), dups, final.Written)
				}
				if final.Dropped == 0 || uint64(refused.Load()) != final.Dropped {
					t.Errorf("dropped %d, refused %d: want the overflow (and only it) dropped", final.Dropped, refused.Load())
				}
				return
			}
			// rsyslogd read the stream in order up to the stop: the last
			// message it wrote then is where the unread bytes began.
			last := 0
			for _, l := range beforeOutage {
				_, body := parseReceived(t, l)
				last = max(last, int(body["cookie"].(float64)))
			}
			// Frames of the unread bytes, counted generously: no frame is
			// shorter than the shortest message received plus its framing
			// (one byte at least; TLS records only add), and one more for
			// a frame rsyslogd had begun to read.
			shortest := 0
			for _, l := range r.lines() {
				if n := len(l) + 1; shortest == 0 || n < shortest {
					shortest = n
				}
			}
			allowed := int64(0)
			if unread > 0 {
				allowed = int64((unread+uint64(shortest)-1)/uint64(shortest)) + 1
			}
			t.Logf("%s: rsyslogd held %d bytes unread on %d connection(s) when stopped: at most %d messages (of %d bytes or more); unaccounted %d, after event %d (the outage began after %d): %s",
				mode, unread, unreadConns, allowed, shortest, lost, last, stopped, runs(missing))
			if lost < 0 || lost > allowed || dups > 3 {
				t.Errorf("%s: delivered %d + dropped %d vs produced %d: %d unaccounted, %d duplicates; want at most %d unaccounted (what rsyslogd held unread) and 3 duplicates",
					mode, delivered, final.Dropped, produced.Load(), lost, dups, allowed)
			}
			// The lost ones are what rsyslogd had not read: the messages
			// right after the last it wrote before the stop, one run.
			if len(missing) != int(max(lost, 0)) {
				t.Errorf("%s: %d events missing, %d unaccounted by the counts", mode, len(missing), lost)
			}
			for k, i := range missing {
				if i != last+1+k {
					t.Errorf("%s: missing events %s: want one run right after event %d, the last rsyslogd wrote before the stop", mode, runs(missing), last)
					break
				}
			}
			// The sink counts as written what the receiver's kernel took,
			// the unread ones included.
			if d := int64(final.Written) - int64(delivered); d < lost-3 || d > lost+3 {
				t.Errorf("sink counted %d written, rsyslogd received %d, %d lost unread", final.Written, delivered, lost)
			}
			if final.Dropped == 0 || uint64(refused.Load()) != final.Dropped {
				t.Errorf("dropped %d, refused %d: want the overflow (and only it) dropped", final.Dropped, refused.Load())
			}
		})
	}
}

// unreadWatch measures what rsyslogd's kernel held that rsyslogd never
// read when it stopped: the receive queue (rcv_nxt - copied_seq, which
// counts a FIN received after rsyslogd closed as one byte) of its
// accepted connections as the kernel reports them in their sock_diag
// destroy notifications. Read there, at the socket's end, it is exact; a
// Recv-Q read before the signal would miss what arrives and what rsyslogd
// reads meanwhile. Over plain TCP and TLS this is the loss a sender cannot
// see (docs/delivery.md), so it is the bound the restart test allows.
type unreadWatch struct {
	t     *testing.T
	port  uint16
	d     *diag.Destroy
	conns map[uint64]bool // cookies of rsyslogd's connections before the stop
}

// watchUnread subscribes to TCP/IPv4 destroy notifications and notes the
// connections rsyslogd has accepted on port. Call it before the stop.
func watchUnread(t *testing.T, port int) *unreadWatch {
	t.Helper()
	d, err := diag.OpenDestroy([]snapshot.Proto{snapshot.ProtoTCP}, []snapshot.Family{snapshot.FamilyIPv4}, 0)
	if err != nil {
		t.Fatalf("measure rsyslogd's unread bytes: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	c, err := diag.Open()
	if err != nil {
		t.Fatalf("measure rsyslogd's unread bytes: %v", err)
	}
	defer c.Close()
	var tab snapshot.Table
	if err := c.Dump(&tab, diag.Requests([]snapshot.Proto{snapshot.ProtoTCP}, []snapshot.Family{snapshot.FamilyIPv4}, false)); err != nil {
		t.Fatalf("measure rsyslogd's unread bytes: %v", err)
	}
	w := &unreadWatch{t: t, port: uint16(port), d: d, conns: map[uint64]bool{}}
	for i := range tab.Sockets {
		if s := &tab.Sockets[i]; s.Src.Port() == w.port && s.State != snapshot.StateListen {
			w.conns[s.Cookie] = true
		}
	}
	if len(w.conns) == 0 {
		t.Fatalf("rsyslogd on port %d has no connection before the stop", port)
	}
	return w
}

// unread waits (after the stop) for the destroy notifications of every
// connection noted and returns the bytes they held unread, and how many
// connections were counted.
func (w *unreadWatch) unread() (bytes uint64, conns int) {
	w.t.Helper()
	var tab snapshot.Table
	waiting := len(w.conns)
	ok := waitUntil(30*time.Second, func() bool {
		for {
			tab.Reset()
			full, err := w.d.Drain(&tab)
			if err != nil {
				w.t.Fatalf("destroy notifications: %v", err)
			}
			for i := range tab.Sockets {
				s := &tab.Sockets[i]
				// The listener ends too, in state close with no peer.
				if s.Src.Port() != w.port || s.Dst.Port() == 0 {
					continue
				}
				bytes += uint64(s.RQueue)
				conns++
				if w.conns[s.Cookie] {
					w.conns[s.Cookie] = false
					waiting--
				}
			}
			if !full {
				return waiting == 0
			}
		}
	})
	if !ok {
		w.t.Fatalf("no destroy notification for %d of rsyslogd's connections in 30s", waiting)
	}
	return bytes, conns
}

// runs writes ascending s as runs, "3-7 9", for messages.
func runs(s []int) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", s[i], s[j])
		} else {
			fmt.Fprintf(&b, "%d", s[i])
		}
		i = j + 1
	}
	return "[" + b.String() + "]"
}
