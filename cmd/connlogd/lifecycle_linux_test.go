//go:build linux

package main

import (
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/netnstest"
)

var tsRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z$`)

// checkCommon asserts the fields every socket event carries.
func checkCommon(t *testing.T, e ev, proto, family, state string) {
	t.Helper()
	if !tsRE.MatchString(e.str("ts")) {
		t.Errorf("ts %q is not RFC 3339 UTC with fractional seconds", e.str("ts"))
	}
	if e.str("proto") != proto || e.str("family") != family || e.str("state") != state {
		t.Errorf("proto/family/state = %s/%s/%s, want %s/%s/%s", e.str("proto"), e.str("family"), e.str("state"), proto, family, state)
	}
	for _, k := range []string{"src_ip", "dst_ip", "host"} {
		if e.str(k) == "" {
			t.Errorf("%s missing or not a string in %v", k, e)
		}
	}
	for _, k := range []string{"src_port", "dst_port", "cookie", "uid", "inode"} {
		if e.num(k) < 0 {
			t.Errorf("%s missing or not a number in %v", k, e)
		}
	}
	if e.num("cookie") <= 0 {
		t.Errorf("cookie %v, want > 0", e["cookie"])
	}
}

func listenIn(t *testing.T, ns *netnstest.NS, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatal(err)
	}
	return ln
}

// defaultInterval, in startDaemon's extra configuration, keeps the
// default poll interval (config.DefaultInterval), which users get:
// startDaemon puts in its 200ms only when extra names no interval.
const defaultInterval = "# interval: the default\n"

// startDefaultDaemon is startDaemon on the default poll interval; it
// checks that the daemon says it polls on the default.
func startDefaultDaemon(t *testing.T, ns *netnstest.NS, extra string) *proc {
	t.Helper()
	d := startDaemon(t, ns, defaultInterval+extra)
	waitLog(t, d, " interval="+config.DefaultInterval.String(), 1, time.Minute)
	return d
}

// intervalCases are a lifecycle test's daemons: on the harness's 200ms
// poll (quick), and on the default interval (what users get).
var intervalCases = []struct{ name, cfg string }{
	{"200ms", ""},
	{"default_interval", defaultInterval},
}

// startCase starts a daemon on cfg: on the default interval when cfg
// begins with defaultInterval, else as startDaemon does.
func startCase(t *testing.T, ns *netnstest.NS, cfg string) *proc {
	t.Helper()
	if rest, ok := strings.CutPrefix(cfg, defaultInterval); ok {
		return startDefaultDaemon(t, ns, rest)
	}
	return startDaemon(t, ns, cfg)
}

// eachInterval runs test on each of intervalCases, in parallel: each
// makes a namespace and a daemon of its own.
func eachInterval(t *testing.T, test func(t *testing.T, cfg string)) {
	for _, c := range intervalCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			test(t, c.cfg)
		})
	}
}

// waitPolls waits until the daemon has begun n polls after the call,
// each seen by a UDP socket opened after the previous one appeared
// (UDP, so that the namespace's TCP table stays as the test made it).
// This counts polls where a sleep would count fewer on a busy machine.
func (d *proc) waitPolls(ns *netnstest.NS, n int) {
	d.t.Helper()
	for range n {
		var pc net.PacketConn
		if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); return err }); err != nil {
			d.t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		d.waitFor("a poll", time.Minute, countOf(nil, "appeared", "udp", port))
		pc.Close()
	}
}

// parallelUnlessStrict runs a case in parallel with the others (each
// has a namespace and a daemon of its own) unless it demands reason
// destroyed: the more the machine runs, the later the kernel's work
// queue may send a notification, and the likelier a poll finds the
// socket gone first. Those run alone, first, as they always have.
func parallelUnlessStrict(t *testing.T, reasons []string) {
	if !slices.Equal(reasons, []string{"destroyed"}) {
		t.Parallel()
	}
}

// TestListenerAppearsAndCloses runs with destroy notifications (closes
// reported at once, reason destroyed) and without (closes found by polls
// and confirmed by lookup, reason gone), each on the default interval
// too.
func TestListenerAppearsAndCloses(t *testing.T) {
	// The kernel sends destroy notifications from a work queue: on a busy
	// machine one can come after the next poll, which then finds the
	// socket gone first (reason gone, as docs/events.md says). A 3s
	// interval leaves the notification that long, not 200ms; on the
	// default interval either reason is what users get, once.
	const noDestroy = "destroy:\n  enabled: false"
	for _, tc := range []struct {
		network, addr, family, ip, name, cfg string
		reasons                              []string
	}{
		{"tcp4", "127.0.0.1:0", "ipv4", "127.0.0.1", "destroyed", "interval: 3s", []string{"destroyed"}},
		{"tcp6", "[::1]:0", "ipv6", "::1", "destroyed", "interval: 3s", []string{"destroyed"}},
		{"tcp4", "127.0.0.1:0", "ipv4", "127.0.0.1", "gone", noDestroy, []string{"gone"}},
		{"tcp6", "[::1]:0", "ipv6", "::1", "gone", noDestroy, []string{"gone"}},
		// On the default interval, one family each: the interval does not
		// tell them apart, and the cases wait out real seconds.
		{"tcp4", "127.0.0.1:0", "ipv4", "127.0.0.1", "destroyed_default_interval", defaultInterval, []string{"destroyed", "gone"}},
		{"tcp6", "[::1]:0", "ipv6", "::1", "gone_default_interval", defaultInterval + noDestroy, []string{"gone"}},
	} {
		t.Run(tc.family+"/"+tc.name, func(t *testing.T) {
			parallelUnlessStrict(t, tc.reasons)
			ns := netnstest.New(t)
			d := startCase(t, ns, tc.cfg)
			// Let the first poll pass, so the listener is a new socket:
			// "watching" is logged when it has (a fixed sleep was not
			// enough on a busy machine).
			waitLog(t, d, "msg=watching ", 1, time.Minute)
			ln := listenIn(t, ns, tc.network, tc.addr)
			port := ln.Addr().(*net.TCPAddr).Port
			evs := d.waitFor("listener appeared", time.Minute, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", port)) > 0 })
			ap := match(evs, "appeared", "tcp", port)[0]
			checkCommon(t, ap, "tcp", tc.family, "listen")
			if ap.str("src_ip") != tc.ip || ap.has("initial") || ap.num("inode") <= 0 {
				t.Errorf("appeared event %v; stderr:\n%s", ap, d.logs())
			}
			ln.Close()
			d.waitFor("listener closed", time.Minute, func(evs []ev) bool { return len(match(evs, "closed", "tcp", port)) > 0 })
			// Two more polls, each seen by a marker listener opened after
			// the close appearing: nothing may repeat. (A fixed sleep is
			// fewer polls on a busy machine.)
			for i := 0; i < 2; i++ {
				mk := listenIn(t, ns, tc.network, tc.addr)
				if mk.Addr().(*net.TCPAddr).Port == port { // not the port under test
					again := listenIn(t, ns, tc.network, tc.addr)
					mk.Close()
					mk = again
				}
				mport := mk.Addr().(*net.TCPAddr).Port
				d.waitFor("a poll after the close", time.Minute, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", mport)) > 0 })
				mk.Close()
			}
			evs = d.events()
			if n := len(match(evs, "appeared", "tcp", port)); n != 1 {
				t.Errorf("%d appeared events, want 1", n)
			}
			cl := match(evs, "closed", "tcp", port)
			if len(cl) != 1 {
				t.Fatalf("%d closed events, want 1:\n%s", len(cl), dump(evs))
			}
			checkCommon(t, cl[0], "tcp", tc.family, "listen")
			if cl[0].num("cookie") != ap.num("cookie") || !slices.Contains(tc.reasons, cl[0].str("reason")) || cl[0].num("duration") <= 0 {
				t.Errorf("closed event %v, want reason %v", cl[0], tc.reasons)
			}
			t.Logf("closed with reason %s", cl[0].str("reason"))
			if n := len(match(evs, "state_changed", "tcp", port)); n != 0 {
				t.Errorf("%d state_changed events for a listener", n)
			}
		})
	}
}

func TestConnectionHalfCloseAndClose(t *testing.T) { eachInterval(t, testConnectionHalfCloseAndClose) }

func testConnectionHalfCloseAndClose(t *testing.T, cfg string) {
	ns := netnstest.New(t)
	ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln.Close()
	d := startCase(t, ns, cfg)
	waitLog(t, d, "msg=watching ", 1, time.Minute) // the first poll has passed
	var cl *net.TCPConn
	if err := ns.Do(func() error {
		c, err := net.Dial("tcp4", ln.Addr().String())
		cl, _ = c.(*net.TCPConn)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	svc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sv := svc.(*net.TCPConn)
	defer sv.Close()
	cport := cl.LocalAddr().(*net.TCPAddr).Port
	sport := sv.LocalAddr().(*net.TCPAddr).Port
	if _, err := cl.Write(make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Read(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	// The server's socket is keyed by the listener's port, so find it by
	// its peer: the client's port.
	server := func(evs []ev, kind string) []ev {
		var out []ev
		for _, e := range match(evs, kind, "tcp", sport) {
			if int(e.num("dst_port")) == cport {
				out = append(out, e)
			}
		}
		return out
	}
	d.waitFor("both sockets appeared", time.Minute, func(evs []ev) bool {
		return len(match(evs, "appeared", "tcp", cport)) > 0 && len(server(evs, "appeared")) > 0
	})
	if err := cl.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	stateIs := func(evs []ev, want string) bool {
		for _, e := range evs {
			if e.str("state") == want {
				return true
			}
		}
		return false
	}
	d.waitFor("half-close states", time.Minute, func(evs []ev) bool {
		return stateIs(match(evs, "state_changed", "tcp", cport), "fin_wait2") && stateIs(server(evs, "state_changed"), "close_wait")
	})
	// An abortive close of the client (RST) takes both sockets down
	// without a TIME_WAIT remnant.
	cl.SetLinger(0)
	cl.Close()
	d.waitFor("both closed", time.Minute, func(evs []ev) bool {
		return len(match(evs, "closed", "tcp", cport)) > 0 && len(server(evs, "closed")) > 0
	})
	d.waitPolls(ns, 2) // nothing may repeat
	evs := d.events()
	for _, side := range []struct {
		name string
		evs  func(kind string) []ev
		st   []string
	}{
		{"client", func(k string) []ev { return match(evs, k, "tcp", cport) }, []string{"fin_wait1", "fin_wait2"}},
		{"server", func(k string) []ev { return server(evs, k) }, []string{"close_wait"}},
	} {
		ap, cls := side.evs("appeared"), side.evs("closed")
		if len(ap) != 1 || len(cls) != 1 {
			t.Fatalf("%s: %d appeared, %d closed, want 1 each:\n%s", side.name, len(ap), len(cls), dump(evs))
		}
		checkCommon(t, ap[0], "tcp", "ipv4", "established")
		for _, sc := range side.evs("state_changed") {
			if !tsRE.MatchString(sc.str("ts")) || sc.str("prev_state") == "" {
				t.Errorf("%s: state_changed %v", side.name, sc)
			}
		}
		last := side.evs("state_changed")
		if len(last) == 0 || last[len(last)-1].str("state") != side.st[len(side.st)-1] {
			t.Errorf("%s: state changes %v, want to end in %s", side.name, dump(last), side.st[len(side.st)-1])
		}
		c := cls[0]
		if c.num("cookie") != ap[0].num("cookie") || c.num("duration") <= 0 {
			t.Errorf("%s: closed %v", side.name, c)
		}
	}
	if c := match(evs, "closed", "tcp", cport)[0]; c.num("bytes_sent") < 300 {
		t.Errorf("client closed bytes_sent = %v, want >= 300", c["bytes_sent"])
	}
	if c := server(evs, "closed")[0]; c.num("bytes_received") < 300 {
		t.Errorf("server closed bytes_received = %v, want >= 300 (the kernel counts the FIN)", c["bytes_received"])
	}
}

func TestConnectedUDPAppearsAndCloses(t *testing.T) {
	eachInterval(t, testConnectedUDPAppearsAndCloses)
}

func testConnectedUDPAppearsAndCloses(t *testing.T, cfg string) {
	ns := netnstest.New(t)
	d := startCase(t, ns, cfg)
	waitLog(t, d, "msg=watching ", 1, time.Minute) // the first poll has passed
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.Dial("udp4", "127.0.0.1:9"); return err }); err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	evs := d.waitFor("udp appeared", time.Minute, func(evs []ev) bool { return len(match(evs, "appeared", "udp", port)) > 0 })
	ap := match(evs, "appeared", "udp", port)[0]
	checkCommon(t, ap, "udp", "ipv4", "established")
	if ap.num("dst_port") != 9 || ap.str("dst_ip") != "127.0.0.1" {
		t.Errorf("appeared %v", ap)
	}
	c.Close()
	d.waitFor("udp closed", time.Minute, func(evs []ev) bool { return len(match(evs, "closed", "udp", port)) > 0 })
	d.waitPolls(ns, 2) // nothing may repeat
	evs = d.events()
	if a, cl := len(match(evs, "appeared", "udp", port)), match(evs, "closed", "udp", port); a != 1 || len(cl) != 1 || cl[0].has("bytes_sent") {
		t.Errorf("%d appeared, %d closed (want 1 each, no TCP counters):\n%s", a, len(cl), dump(evs))
	}
}

func TestStartupSocketsAreMarkedInitial(t *testing.T) {
	eachInterval(t, testStartupSocketsAreMarkedInitial)
}

func testStartupSocketsAreMarkedInitial(t *testing.T, cfg string) {
	ns := netnstest.New(t)
	ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	d := startCase(t, ns, cfg)
	evs := d.waitFor("initial listener", time.Minute, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", port)) > 0 })
	if ap := match(evs, "appeared", "tcp", port)[0]; ap["initial"] != true {
		t.Errorf("start-up socket not marked initial: %v", ap)
	}
}

// TestBoundSocketSurvivesLastListener: a TCP socket that is only bound
// sits in no hash the kernel's exact lookup searches and is not counted
// by sockstat's "TCP: inuse", yet dumps return it (state close). When
// the namespace's last hashed TCP socket goes, neither the sockstat skip
// nor a lookup answering ENOENT may turn it into a close.
//
// With destroy notifications the close is usually reason destroyed, but
// on a busy machine the notification can come late enough (the kernel
// sends it from a work queue) for the polls to find the socket gone
// first: at a load average of 20 on two cores, three runs in ten of the
// 200ms case did. Either reason is what users get; one close, and none
// while the socket lives, is the point. On the default interval fewer
// polls (each a second) see the bound socket alone.
func TestBoundSocketSurvivesLastListener(t *testing.T) {
	const noDestroy = "destroy:\n  enabled: false"
	either := []string{"destroyed", "gone"}
	for _, tc := range []struct {
		name, cfg string
		reasons   []string
		alone     int // polls with the bound socket the only TCP one
	}{
		{"destroy", "", either, 10},
		{"poll", noDestroy, []string{"gone"}, 10},
		{"destroy_default_interval", defaultInterval, either, 2},
		{"poll_default_interval", defaultInterval + noDestroy, []string{"gone"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallelUnlessStrict(t, tc.reasons)
			ns := netnstest.New(t)
			var fd int
			if err := ns.Do(func() (err error) {
				if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
					return err
				}
				return unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
			}); err != nil {
				t.Fatal(err)
			}
			closed := false
			defer func() {
				if !closed {
					unix.Close(fd)
				}
			}()
			sa, err := unix.Getsockname(fd)
			if err != nil {
				t.Fatal(err)
			}
			bport := sa.(*unix.SockaddrInet4).Port
			ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
			lport := ln.Addr().(*net.TCPAddr).Port
			d := startCase(t, ns, tc.cfg)
			d.waitFor("bound socket and listener", time.Minute, func(evs []ev) bool {
				return len(match(evs, "appeared", "tcp", bport)) > 0 && len(match(evs, "appeared", "tcp", lport)) > 0
			})
			ln.Close()
			d.waitFor("listener closed", time.Minute, countOf(nil, "closed", "tcp", lport))
			d.waitPolls(ns, tc.alone)
			ln2 := listenIn(t, ns, "tcp4", "127.0.0.1:0")
			defer ln2.Close()
			l2port := ln2.Addr().(*net.TCPAddr).Port
			d.waitFor("second listener", time.Minute, countOf(nil, "appeared", "tcp", l2port))
			d.waitPolls(ns, 2)
			evs := d.events()
			if cl := match(evs, "closed", "tcp", bport); len(cl) != 0 {
				t.Fatalf("live bound socket reported closed:\n%s", dump(evs))
			}
			if ap := match(evs, "appeared", "tcp", bport); len(ap) != 1 || ap[0].str("state") != "close" {
				t.Fatalf("bound socket: want one appeared in state close:\n%s", dump(evs))
			}
			closed = true
			unix.Close(fd)
			d.waitFor("bound socket closed", time.Minute, countOf(nil, "closed", "tcp", bport))
			d.waitPolls(ns, 2) // a notification after a poll found it gone adds nothing
			evs = d.events()
			if cl := match(evs, "closed", "tcp", bport); len(cl) != 1 || !slices.Contains(tc.reasons, cl[0].str("reason")) {
				t.Errorf("bound socket's close: want one, reason %v; closes:\n%s\nall events:\n%s", tc.reasons, dump(cl), dump(evs))
			} else {
				t.Logf("closed with reason %s", cl[0].str("reason"))
			}
		})
	}
}
