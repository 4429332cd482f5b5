//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/internal/schematest"
)

// schemaRun is a daemon writing the same events in the three schemas, to
// three files.
type schemaRun struct {
	*proc
	ecsPath, ocsfPath string
}

func startSchemaDaemon(t *testing.T, ns *netnstest.NS, extra string) *schemaRun {
	t.Helper()
	dir := t.TempDir()
	r := &schemaRun{ecsPath: filepath.Join(dir, "ecs.json"), ocsfPath: filepath.Join(dir, "ocsf.json")}
	native := filepath.Join(dir, "native.json")
	cfg := filepath.Join(dir, "config.yaml")
	body := extra + "\nsinks:\n" +
		"  - type: file\n    path: " + native + "\n" +
		"  - type: file\n    path: " + r.ecsPath + "\n    schema: ecs\n" +
		"  - type: file\n    path: " + r.ocsfPath + "\n    schema: ocsf\n"
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &proc{t: t, out: native, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	d.cmd = ns.Command(connlogdBin, "-config", cfg)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop() })
	r.proc = d
	return r
}

// lines returns the complete lines of a file.
func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	} else {
		return nil
	}
	return bytes.Split(b, []byte("\n"))
}

// check validates the three files of a stopped run: every ECS and OCSF
// line against the official schemas, every community id against the
// specification's algorithm, every event id unique and the same event
// under the same id in the three schemas. It returns the native events
// by id, and the ECS and OCSF ones decoded, by the same ids.
func (r *schemaRun) check(t *testing.T) (native map[string]ev, ecs, ocsf map[string]map[string]any) {
	t.Helper()
	ecsSchema := schematest.LoadedECS(t).WithCustom("connlogd")
	ocsfSchema := schematest.LoadedOCSF(t)
	native = map[string]ev{}
	for _, e := range r.events() {
		id := e.str("event_id")
		if len(id) != 32 {
			t.Errorf("native event without a 32-digit event_id: %v", e)
			continue
		}
		if _, dup := native[id]; dup {
			t.Errorf("event_id %s on two native events:\n%v\n%v", id, native[id], e)
		}
		native[id] = e
	}
	violations := map[string]int{}
	decodeAll := func(path string, validate func([]byte) []schematest.Violation, idOf func(map[string]any) string) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, l := range lines(t, path) {
			for _, v := range validate(l) {
				if violations[filepath.Base(path)+" "+v.Kind+" "+v.Path]++; violations[filepath.Base(path)+" "+v.Kind+" "+v.Path] == 1 {
					t.Errorf("%s: %v\n%s", filepath.Base(path), v, l)
				}
			}
			dec := json.NewDecoder(bytes.NewReader(l))
			dec.UseNumber()
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("%s: %v: %s", path, err, l)
			}
			id := idOf(m)
			if _, dup := out[id]; dup || native[id] == nil {
				t.Errorf("%s: event id %q repeated or not among the native events: %s", filepath.Base(path), id, l)
			}
			out[id] = m
		}
		return out
	}
	ecs = decodeAll(r.ecsPath, ecsSchema.Validate, func(m map[string]any) string { return str(m, "event.id") })
	ocsf = decodeAll(r.ocsfPath, ocsfSchema.Validate, func(m map[string]any) string { return str(m, "metadata.uid") })
	total := 0
	for _, n := range violations {
		total += n
	}
	if total > 0 {
		t.Errorf("%d schema violations: %v", total, violations)
	}
	if len(ecs) != len(native) || len(ocsf) != len(native) {
		t.Errorf("%d native, %d ECS, %d OCSF events: each schema must carry every event", len(native), len(ecs), len(ocsf))
	}
	// Community ids: computed here from the native tuple, by the
	// specification, and the same in the three schemas.
	checked := 0
	for id, e := range native {
		want := ""
		if e.has("dst_ip") {
			src := netip.MustParseAddr(e.str("src_ip"))
			dst := netip.MustParseAddr(e.str("dst_ip"))
			if !dst.IsUnspecified() && e.num("dst_port") != 0 {
				if src.Is4In6() && dst.Is4In6() {
					src, dst = src.Unmap(), dst.Unmap()
				}
				proto := uint8(6)
				if e.str("proto") == "udp" {
					proto = 17
				}
				want = schematest.CommunityID(0, proto, src, dst, uint16(e.num("src_port")), uint16(e.num("dst_port")), true)
			}
		}
		got := []string{e.str("community_id"), str(ecs[id], "network.community_id"), str(ocsf[id], "unmapped.community_id")}
		for i, g := range got {
			if g != want {
				t.Errorf("event %s: community id %q in schema %d, want %q: %v", id, g, i, want, e)
			}
		}
		if want != "" {
			checked++
		}
	}
	if checked == 0 {
		t.Error("no community id checked")
	}
	t.Logf("%d events in each schema, %d community ids checked, %d violations", len(native), checked, total)
	return native, ecs, ocsf
}

// str returns the string at a dotted path of a decoded object, or "".
func str(m map[string]any, path string) string {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = o[k]
	}
	s, _ := v.(string)
	return s
}

// val returns the value at a dotted path, or nil.
func val(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[k]
	}
	return v
}

func byPort(native map[string]ev, kind string, port int) []ev {
	var out []ev
	for _, e := range native {
		if e.str("event") == kind && int(e.num("src_port")) == port {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].str("ts") < out[j].str("ts") })
	return out
}

// exchange connects to ln's address over network, sends, half-closes,
// reads the server's answer and closes; the server answers after the
// client's half-close. It returns the client's local port.
func exchange(t *testing.T, ns *netnstest.NS, ln net.Listener, network, addr string, poll time.Duration) int {
	t.Helper()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		if _, err := io.Copy(io.Discard, c); err != nil {
			served <- err
			return
		}
		// Half-closed for a while: the client in fin_wait2, this end in
		// close_wait, each seen by a poll.
		time.Sleep(2 * poll)
		_, err = c.Write([]byte("bye"))
		served <- err
	}()
	port := 0
	err := ns.Do(func() error {
		c, err := dial(network, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		port = c.LocalAddr().(*net.TCPAddr).Port
		if _, err := c.Write([]byte("hello")); err != nil {
			return err
		}
		// Hold the connection across a poll so that its states are seen.
		time.Sleep(poll * 3 / 2)
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		_, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	return port
}

// dial is net.Dial, and "tcp6-mapped" an IPv6 socket connected to an IPv4
// address through its IPv4-mapped form, which net.Dial does not make (it
// opens an IPv4 socket for "::ffff:a.b.c.d").
func dial(network, addr string) (net.Conn, error) {
	if network != "tcp6-mapped" {
		return net.Dial(network, addr)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "mapped")
	defer f.Close()
	sa := &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: netip.AddrFrom16(ap.Addr().As16()).As16()}
	if err := syscall.Connect(fd, sa); err != nil {
		return nil, err
	}
	return net.FileConn(f)
}

// TestSchemasEndToEnd runs the daemon on every kind of socket event with
// the three schemas at once, and checks the output against the official
// schemas, the Community ID specification and the event id contract: on
// the harness's quick polls, which catch more sockets alive, and on the
// default interval, where more of them are known from their destroy
// notifications alone.
func TestSchemasEndToEnd(t *testing.T) {
	for _, c := range intervalCases {
		t.Run(c.name, func(t *testing.T) {
			interval, poll := "interval: 200ms\n", 200*time.Millisecond
			if c.cfg == defaultInterval {
				interval, poll = defaultInterval, config.DefaultInterval
			}
			testSchemasEndToEnd(t, interval, poll)
		})
	}
}

// longFor is how long the end-to-end test's long connection lasts, on
// polls every poll with flow_update_interval 1s.
func longFor(poll time.Duration) time.Duration { return 5 * (time.Second + poll) }

// testSchemasEndToEnd is TestSchemasEndToEnd with a poll interval: the
// configuration's line for it, and its length.
func testSchemasEndToEnd(t *testing.T, interval string, poll time.Duration) {
	ns := netnstest.New(t)
	// An address whose packets vanish, for a connect that times out: a
	// route to loopback for addresses that are not local, which the
	// namespace then drops; SYNs given up after one retransmission.
	ns.Run(t, "ip", "addr", "add", "10.9.9.1/24", "dev", "lo")
	ns.Run(t, "ip", "route", "add", "10.8.0.0/16", "dev", "lo", "src", "10.9.9.1")
	ns.Run(t, "sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1")
	ns.Run(t, "sysctl", "-q", "-w", "net.ipv4.tcp_synack_retries=1")

	pre := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer pre.Close()
	r := startSchemaDaemon(t, ns, interval+"flow_update_interval: 1s\n")
	prePort := pre.Addr().(*net.TCPAddr).Port
	r.waitFor("the pre-existing listener", 10*time.Second, countOf(nil, "appeared", "tcp", prePort))

	// TCP over IPv4, IPv6 and IPv4-mapped IPv6: listen, connect,
	// half-close, close.
	ln4 := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln4.Close()
	ln6 := listenIn(t, ns, "tcp6", "[::1]:0")
	defer ln6.Close()
	lnDual := listenIn(t, ns, "tcp", "[::]:0") // dual stack: IPv4 clients become mapped addresses
	defer lnDual.Close()
	dualPort := lnDual.Addr().(*net.TCPAddr).Port
	c4 := exchange(t, ns, ln4, "tcp4", ln4.Addr().String(), poll)
	c6 := exchange(t, ns, ln6, "tcp6", ln6.Addr().String(), poll)
	cMapped := exchange(t, ns, lnDual, "tcp6-mapped", fmt.Sprintf("127.0.0.1:%d", dualPort), poll)
	cV4ToDual := exchange(t, ns, lnDual, "tcp4", fmt.Sprintf("127.0.0.1:%d", dualPort), poll)

	// UDP: a server, a connected client and an unconnected one.
	var srv, unconnected net.PacketConn
	var connected net.Conn
	err := ns.Do(func() (err error) {
		if srv, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			return err
		}
		if connected, err = net.Dial("udp4", srv.LocalAddr().String()); err != nil {
			return err
		}
		if _, err = connected.Write([]byte("ping")); err != nil {
			return err
		}
		if unconnected, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			return err
		}
		_, err = unconnected.WriteTo([]byte("ping"), srv.LocalAddr())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	udpConnPort := connected.LocalAddr().(*net.UDPAddr).Port

	// A bound-only TCP socket.
	var boundFD int
	err = ns.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		boundFD = fd
		return syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(boundFD)
	if err != nil {
		t.Fatal(err)
	}
	boundPort := sa.(*syscall.SockaddrInet4).Port
	udpUnconnPort := unconnected.LocalAddr().(*net.UDPAddr).Port
	// Let a poll see the bound socket before it closes.
	r.waitFor("the bound-only socket", 10*time.Second, countOf(nil, "appeared", "tcp", boundPort))

	// A refused connect and one that times out.
	closedPort := 0
	err = ns.Do(func() error {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		closedPort = l.Addr().(*net.TCPAddr).Port
		l.Close()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ns.Do(func() error {
			c, err := net.DialTimeout("tcp4", "10.8.1.1:80", 30*time.Second)
			if err == nil {
				c.Close()
				t.Error("connect to a dropping route succeeded")
			}
			return nil
		})
	}()
	err = ns.Do(func() error {
		c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", closedPort))
		if err == nil {
			c.Close()
			return fmt.Errorf("connect to a closed port succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// An inbound handshake the client never completes: a SYN from an
	// address whose SYN-ACKs the namespace drops.
	lnHalf := listenIn(t, ns, "tcp4", "0.0.0.0:0")
	defer lnHalf.Close()
	halfPort := lnHalf.Addr().(*net.TCPAddr).Port
	if err := ns.Do(func() error {
		return sendSYN(netip.MustParseAddrPort("10.8.1.1:5555"), netip.AddrPortFrom(netip.MustParseAddr("10.9.9.1"), uint16(halfPort)))
	}); err != nil {
		t.Fatal(err)
	}

	// A connection of 5 s, with updates every second.
	lnLong := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer lnLong.Close()
	go func() {
		c, err := lnLong.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	longPort := 0
	err = ns.Do(func() error {
		c, err := net.Dial("tcp4", lnLong.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		longPort = c.LocalAddr().(*net.TCPAddr).Port
		// Long enough for 3 updates however the polls fall: one is due
		// at the first poll a second after the last event, so they come
		// every 1 s + poll at worst (6 s on 200 ms polls, 10 s on 1 s).
		for range int(longFor(poll) / (100 * time.Millisecond)) {
			if _, err := c.Write(make([]byte, 1000)); err != nil {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Bursts of short-lived connections, and some aborted by the client
	// (SO_LINGER 0: a reset, counters zeroed), which are no failed
	// attempts on either end.
	tcpAddr, udpAddr := servers(t, ns)
	shortLived(t, ns, tcpAddr, udpAddr, 200, 20, 8, 0)
	err = ns.Do(func() error {
		for range 20 {
			c, err := net.Dial("tcp4", tcpAddr)
			if err != nil {
				return err
			}
			if _, err := c.Write([]byte("hello")); err != nil {
				return err
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(boundFD)
	connected.Close()
	unconnected.Close()
	wg.Wait()

	r.waitFor("the failed connects and the closes", 30*time.Second, func(evs []ev) bool {
		n := 0
		for _, e := range evs {
			if e.str("event") == "closed" && e.str("outcome") == "failed" {
				n++
			}
		}
		return n >= 3 && len(match(evs, "closed", "udp", udpConnPort)) > 0
	})
	r.stop()
	native, ecs, ocsf := r.check(t)

	// Every kind the daemon emits on a socket is here.
	kinds := map[string]int{}
	for _, e := range native {
		kinds[e.str("event")]++
	}
	for _, k := range []string{"appeared", "state_changed", "updated", "closed"} {
		if kinds[k] == 0 {
			t.Errorf("no %s event; kinds %v", k, kinds)
		}
	}

	// One closed event with its outcome for each failed connect, and for
	// the handshake never completed; no other failure.
	var refused, timedOut, half []ev
	for _, e := range native {
		if e.str("event") != "closed" || e.str("proto") != "tcp" {
			continue
		}
		switch {
		case e.str("dst_ip") == "127.0.0.1" && int(e.num("dst_port")) == closedPort:
			refused = append(refused, e)
		case e.str("dst_ip") == "10.8.1.1" && int(e.num("dst_port")) == 80:
			timedOut = append(timedOut, e)
		case e.str("dst_ip") == "10.8.1.1" && int(e.num("src_port")) == halfPort:
			half = append(half, e)
		case e.str("outcome") != "":
			t.Errorf("a connection that did not fail has an outcome: %v", e)
		}
	}
	if len(half) != 1 || half[0].str("outcome") != "failed" || half[0].has("failure") || half[0].str("direction") != "inbound" ||
		half[0].str("state") != "syn_recv" {
		t.Errorf("inbound handshake never completed: %v", half)
	} else {
		id := half[0].str("event_id")
		if n, _ := val(ocsf[id], "activity_id").(json.Number).Int64(); n != 4 || str(ocsf[id], "src_endpoint.ip") != "10.8.1.1" {
			t.Errorf("inbound attempt: OCSF %v", ocsf[id])
		}
		if str(ecs[id], "event.outcome") != "failure" || str(ecs[id], "source.ip") != "10.8.1.1" {
			t.Errorf("inbound attempt: ECS %v", ecs[id])
		}
	}
	for _, c := range []struct {
		name, failure string
		evs           []ev
		activity      int64
	}{{"refused", "refused", refused, 5}, {"timed out", "timeout", timedOut, 4}} {
		if len(c.evs) != 1 {
			t.Errorf("%s connect: %d closed events, want 1: %v", c.name, len(c.evs), c.evs)
			continue
		}
		e := c.evs[0]
		id := e.str("event_id")
		if e.str("outcome") != "failed" || e.str("failure") != c.failure {
			t.Errorf("%s connect: %v", c.name, e)
		}
		if str(ecs[id], "event.outcome") != "failure" {
			t.Errorf("%s connect: ECS %v", c.name, ecs[id])
		}
		if n, _ := val(ocsf[id], "activity_id").(json.Number).Int64(); n != c.activity {
			t.Errorf("%s connect: OCSF activity %d, want %d", c.name, n, c.activity)
		}
	}

	// The long connection: at least 3 updates, counters that only grow.
	ups := byPort(native, "updated", longPort)
	if len(ups) < 3 {
		t.Errorf("%d updated events for the %v connection, want at least 3", len(ups), longFor(poll))
	}
	var lastBytes, lastDur float64
	for _, u := range ups {
		if u.num("bytes_acked") < lastBytes || u.num("duration") < lastDur || !u.has("segs_out") {
			t.Errorf("updated counters went back or are missing: %v", u)
		}
		lastBytes, lastDur = u.num("bytes_acked"), u.num("duration")
	}

	// Initiator semantics: the client is ECS source and OCSF src_endpoint
	// on both ends of a loopback connection.
	for _, port := range []int{c4, c6, cMapped, cV4ToDual} {
		for _, e := range byPort(native, "closed", port) {
			id := e.str("event_id")
			if p, _ := val(ecs[id], "source.port").(json.Number).Int64(); int(p) != port {
				t.Errorf("client end %d: ECS source.port %d", port, p)
			}
			if p, _ := val(ocsf[id], "src_endpoint.port").(json.Number).Int64(); int(p) != port {
				t.Errorf("client end %d: OCSF src_endpoint.port %d", port, p)
			}
		}
	}
	for _, e := range native {
		if e.str("direction") != "inbound" || e.str("proto") != "tcp" {
			continue
		}
		id := e.str("event_id")
		if p, _ := val(ecs[id], "destination.port").(json.Number).Int64(); int(p) != int(e.num("src_port")) {
			t.Errorf("server end: ECS destination.port %d, want the local %v: %v", p, e.num("src_port"), ecs[id])
		}
		if str(ecs[id], "network.direction") != "ingress" {
			t.Errorf("server end: ECS network.direction %q", str(ecs[id], "network.direction"))
		}
	}
	// Sockets without a peer: the bound-only TCP socket and the
	// unconnected UDP one have only their own end, as destination.
	for _, c := range []struct {
		proto string
		port  int
	}{{"tcp", boundPort}, {"udp", udpUnconnPort}} {
		evs := byPort(native, "appeared", c.port)
		if len(evs) == 0 {
			t.Errorf("no appeared event for the %s socket without a peer on port %d", c.proto, c.port)
		}
		for _, e := range evs {
			id := e.str("event_id")
			if e.str("proto") != c.proto || val(ecs[id], "source") != nil || val(ocsf[id], "src_endpoint") != nil {
				t.Errorf("%s socket without a peer: %v %v", c.proto, ecs[id], ocsf[id])
			}
			if p, _ := val(ecs[id], "destination.port").(json.Number).Int64(); int(p) != c.port {
				t.Errorf("%s socket without a peer: destination.port %d, want its own %d", c.proto, p, c.port)
			}
		}
	}
	// The connected UDP client initiated its flow.
	for _, e := range byPort(native, "appeared", udpConnPort) {
		if p, _ := val(ecs[e.str("event_id")], "source.port").(json.Number).Int64(); int(p) != udpConnPort {
			t.Errorf("connected UDP: ECS source.port %d, want %d", p, udpConnPort)
		}
	}
	// Listeners have no peer; IPv4-mapped flows are IPv4 on the wire.
	for _, e := range byPort(native, "appeared", prePort) {
		id := e.str("event_id")
		if val(ecs[id], "source") != nil || val(ocsf[id], "src_endpoint") != nil {
			t.Errorf("listener with a source: %v %v", ecs[id], ocsf[id])
		}
		if n, _ := val(ocsf[id], "activity_id").(json.Number).Int64(); n != 7 {
			t.Errorf("listener: OCSF activity %d, want 7 (Listen)", n)
		}
	}
	// By port and mapped address: an IPv4 socket elsewhere in the test may
	// get the same ephemeral port number.
	mapped := 0
	for _, e := range byPort(native, "closed", cMapped) {
		if !strings.HasPrefix(e.str("src_ip"), "::ffff:") && !strings.HasPrefix(e.str("dst_ip"), "::ffff:") {
			continue
		}
		mapped++
		id := e.str("event_id")
		if e.str("family") != "ipv6" || str(ecs[id], "network.type") != "ipv4" {
			t.Errorf("IPv4-mapped: native family %s, ECS network.type %s", e.str("family"), str(ecs[id], "network.type"))
		}
	}
	if mapped == 0 {
		t.Errorf("no closed event of the IPv4-mapped connection (port %d)", cMapped)
	}
}

// TestSchemasGap: a destroy-buffer overrun's gap line, in the three
// schemas.
func TestSchemasGap(t *testing.T) {
	ns := netnstest.New(t)
	tcpAddr, udpAddr := servers(t, ns)
	r := startSchemaDaemon(t, ns, "interval: 1s\ndestroy:\n  buffer: 2048\n")
	time.Sleep(1500 * time.Millisecond)
	shortLived(t, ns, tcpAddr, udpAddr, 3000, 0, 16, 0)
	r.waitFor("gap event", 20*time.Second, func(evs []ev) bool {
		for _, e := range evs {
			if e.str("event") == "gap" && e.str("reason") == "destroy_overrun" {
				return true
			}
		}
		return false
	})
	r.stop()
	native, ecs, ocsf := r.check(t)
	gaps := 0
	for id, e := range native {
		if e.str("event") == "gap" {
			gaps++
			if val(ocsf[id], "device") != nil || str(ecs[id], "event.reason") != e.str("reason") {
				t.Errorf("gap: %v %v", ecs[id], ocsf[id])
			}
		}
	}
	if gaps == 0 {
		t.Error("no gap")
	}
}

// sendSYN sends one TCP SYN from src to dst through a raw socket, as a
// scanner or a flood would: no socket of this host owns src, so the
// handshake is never completed.
func sendSYN(src, dst netip.AddrPort) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	pkt := make([]byte, 40)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, syscall.IPPROTO_TCP // version 4, 20-byte header; ttl; protocol
	binary.BigEndian.PutUint16(pkt[2:], 40)                // total length
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(pkt[12:], s4[:])
	copy(pkt[16:], d4[:])
	binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:20], 0))
	tcp := pkt[20:]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1000) // sequence number
	tcp[12], tcp[13] = 5<<4, 0x02             // 20-byte header; SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	// The pseudo-header: addresses, protocol, TCP length.
	var pseudo uint32
	for i := 0; i < 4; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(s4[i:])) + uint32(binary.BigEndian.Uint16(d4[i:]))
	}
	pseudo += syscall.IPPROTO_TCP + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, pseudo))
	return syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: d4})
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
