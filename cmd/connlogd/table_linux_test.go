//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/snapshot"
)

// ssState maps ss's state column to the event names.
var ssState = map[string]string{
	"ESTAB": "established", "SYN-SENT": "syn_sent", "SYN-RECV": "syn_recv",
	"FIN-WAIT-1": "fin_wait1", "FIN-WAIT-2": "fin_wait2", "TIME-WAIT": "time_wait",
	"UNCONN": "close", "CLOSE-WAIT": "close_wait", "LAST-ACK": "last_ack",
	"LISTEN": "listen", "CLOSING": "closing",
}

// ssAddr normalises ss's "addr:port" ("[::1]:80", "0.0.0.0:*", "*:80").
func ssAddr(t *testing.T, s string) string {
	i := strings.LastIndexByte(s, ':')
	host, port := s[:i], s[i+1:]
	if port == "*" {
		port = "0"
	}
	host = strings.Trim(host, "[]")
	if host == "*" {
		host = "::"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		t.Fatalf("ss address %q: %v", s, err)
	}
	p, _ := strconv.Atoi(port)
	return netip.AddrPortFrom(a, uint16(p)).String()
}

// quietTable fills ns with a known mix of idle sockets and returns a
// function closing them.
func quietTable(t *testing.T, ns *netnstest.NS, pairs, timeWait, udpBound, udpConn int) func() {
	var closers []func() error
	err := ns.Do(func() error {
		for _, fam := range []struct{ tcp, udp, lo string }{{"tcp4", "udp4", "127.0.0.1"}, {"tcp6", "udp6", "::1"}} {
			ln, err := net.Listen(fam.tcp, net.JoinHostPort(fam.lo, "0"))
			if err != nil {
				return err
			}
			closers = append(closers, ln.Close)
			accepted := make(chan net.Conn, 64)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						close(accepted)
						return
					}
					accepted <- c
				}
			}()
			for i := 0; i < pairs+timeWait; i++ {
				c, err := net.Dial(fam.tcp, ln.Addr().String())
				if err != nil {
					return err
				}
				s := <-accepted
				if i < pairs {
					closers = append(closers, c.Close, s.Close)
					continue
				}
				c.Close() // active close: the client's side stays as TIME_WAIT
				s.Close()
			}
			for i := 0; i < udpBound; i++ {
				pc, err := net.ListenPacket(fam.udp, net.JoinHostPort(fam.lo, "0"))
				if err != nil {
					return err
				}
				closers = append(closers, pc.Close)
			}
			for i := 0; i < udpConn; i++ {
				c, err := net.Dial(fam.udp, net.JoinHostPort(fam.lo, "9"))
				if err != nil {
					return err
				}
				closers = append(closers, c.Close)
			}
		}
		return nil
	})
	closeAll := func() {
		for _, f := range closers {
			f()
		}
	}
	if err != nil {
		closeAll()
		t.Fatal(err)
	}
	return closeAll
}

// TestOnceMatchesSS compares `connlogd -once` with `ss -tuan` over ~12k
// sockets of every kind.
func TestOnceMatchesSS(t *testing.T) {
	ns := netnstest.New(t)
	// 1400 TIME_WAIT sockets: room for them whatever the namespace's hash
	// size (its default limit is half of it; the host may make it tiny).
	ns.Sysctl(t, "net.ipv4.tcp_max_tw_buckets", "65536")
	closeAll := quietTable(t, ns, 1900, 700, 1000, 500)
	defer closeAll()
	// Wait for the closing sockets to settle into TIME_WAIT (both ends of a
	// closed pair gone but the client's): a socket still changing state
	// between ss and -once would differ. The machine may be busy: poll.
	for deadline := time.Now().Add(60 * time.Second); ; {
		settled, tw := true, 0
		for _, line := range strings.Split(strings.TrimSpace(ns.Run(t, "ss", "-tanH")), "\n") {
			switch st := strings.Fields(line)[0]; st {
			case "TIME-WAIT":
				tw++
			case "LISTEN", "ESTAB":
			default:
				settled = false
			}
		}
		if settled && tw == 2*700 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: %d TIME-WAIT sockets, want 1400; all settled: %v", tw, settled)
		}
		time.Sleep(100 * time.Millisecond)
	}

	ssOut := ns.Run(t, "ss", "-tuanH")
	want := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(ssOut), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("ss line %q", line)
		}
		st, ok := ssState[f[1]]
		if !ok {
			t.Fatalf("ss state %q", f[1])
		}
		want[fmt.Sprintf("%s %s %s %s", f[0], st, ssAddr(t, f[4]), ssAddr(t, f[5]))]++
	}
	out, err := ns.Command(connlogdBin, "-once").Output()
	if err != nil {
		t.Fatalf("connlogd -once: %v", err)
	}
	got := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	lines := 0
	for sc.Scan() {
		lines++
		var e struct {
			Event, Proto, State, SrcIP, DstIP string
			SrcPort, DstPort                  int
		}
		var raw map[string]any
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		e.Event, _ = raw["event"].(string)
		e.Proto, _ = raw["proto"].(string)
		e.State, _ = raw["state"].(string)
		e.SrcIP, _ = raw["src_ip"].(string)
		e.DstIP, _ = raw["dst_ip"].(string)
		sp, _ := raw["src_port"].(float64)
		dp, _ := raw["dst_port"].(float64)
		if e.Event != "socket" {
			t.Fatalf("-once line with event %q", e.Event)
		}
		k := fmt.Sprintf("%s %s %s %s", e.Proto, e.State,
			netip.AddrPortFrom(netip.MustParseAddr(e.SrcIP), uint16(sp)), netip.AddrPortFrom(netip.MustParseAddr(e.DstIP), uint16(dp)))
		got[k]++
	}
	total := 0
	for _, n := range want {
		total += n
	}
	if total < 11000 {
		t.Fatalf("ss lists only %d sockets; the test setup is wrong", total)
	}
	var missing, extra []string
	for k, n := range want {
		if got[k] != n {
			missing = append(missing, fmt.Sprintf("%s (ss %d, connlogd %d)", k, n, got[k]))
		}
	}
	for k, n := range got {
		if want[k] != n {
			extra = append(extra, fmt.Sprintf("%s (ss %d, connlogd %d)", k, want[k], n))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 || lines != total {
		t.Errorf("-once printed %d lines, ss %d sockets; %d differ from ss, %d not in ss; first: %v %v",
			lines, total, len(missing), len(extra), first(missing, 5), first(extra, 5))
	}
	kinds := map[string]bool{}
	for k := range want {
		f := strings.Fields(k)
		kinds[f[0]+" "+f[1]] = true
	}
	for _, k := range []string{"tcp listen", "tcp established", "tcp time_wait", "udp close", "udp established"} {
		if !kinds[k] {
			t.Errorf("setup has no %s socket", k)
		}
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// TestLongLivedSurviveChurn runs 300 long-lived connections beside fast
// churn in a namespace with a tiny (128-bucket) TCP hash, where dumps skip
// and repeat sockets: no long-lived socket may be reported closed or
// appear twice; on the harness's 200ms poll and on the default interval,
// in parallel.
func TestLongLivedSurviveChurn(t *testing.T) { eachInterval(t, testLongLivedSurviveChurn) }

func testLongLivedSurviveChurn(t *testing.T, cfg string) {
	netnstest.Require(t)
	ns := netnstest.NewWithChildEhash(t, 128)
	closeAll := quietTable(t, ns, 150, 0, 0, 0) // 150 pairs per family: 300 connections
	defer closeAll()
	var churnLn net.Listener
	if err := ns.Do(func() (err error) {
		churnLn, err = net.Listen("tcp4", "127.0.0.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer churnLn.Close()
	// Record the long-lived sockets' local addresses as the kernel lists
	// them now; churn runs on 127.0.0.2, so they cannot collide.
	// A churn client may reuse a long-lived client's local port towards
	// 127.0.0.2, so a socket is long-lived by its whole tuple.
	longLived := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(ns.Run(t, "ss", "-tnH", "state", "established")), "\n") {
		f := strings.Fields(line)
		longLived[ssAddr(t, f[len(f)-2])+" "+ssAddr(t, f[len(f)-1])] = true
	}
	if len(longLived) != 600 {
		t.Fatalf("%d long-lived sockets, want 600", len(longLived))
	}
	go func() {
		for {
			c, err := churnLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	d := startCase(t, ns, cfg)
	d.waitFor("initial table", time.Minute, func(evs []ev) bool { return len(evs) >= 600 })

	var stop atomic.Bool
	var wg sync.WaitGroup
	var made atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns.Do(func() error {
				for !stop.Load() {
					c, err := net.Dial("tcp4", churnLn.Addr().String())
					if err != nil {
						time.Sleep(time.Millisecond)
						continue
					}
					// Abortive close: no TIME_WAIT pile-up.
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
					made.Add(1)
				}
				return nil
			})
		}()
	}
	time.Sleep(8 * time.Second)
	stop.Store(true)
	wg.Wait()
	d.waitPolls(ns, 2)
	evs := d.events()
	appeared := map[string]int{}
	gaps := 0
	for _, e := range evs {
		if e.str("event") == "gap" {
			gaps++ // notifications lost under this flood; the polls must still hold
			continue
		}
		tuple := netip.AddrPortFrom(netip.MustParseAddr(e.str("src_ip")), uint16(e.num("src_port"))).String() + " " +
			netip.AddrPortFrom(netip.MustParseAddr(e.str("dst_ip")), uint16(e.num("dst_port"))).String()
		if !longLived[tuple] {
			continue
		}
		switch e.str("event") {
		case "closed", "state_changed":
			t.Errorf("long-lived socket reported %s: %v", e.str("event"), e)
		case "appeared":
			appeared[fmt.Sprint(e["cookie"])]++
		}
	}
	if len(appeared) != 600 {
		t.Errorf("%d long-lived sockets appeared, want 600 (300 connections, both ends)", len(appeared))
	}
	for c, n := range appeared {
		if n != 1 {
			t.Errorf("cookie %s appeared %d times", c, n)
		}
	}
	d.stop()
	t.Logf("churn: %d short connections in 8s, %d events, %d gaps", made.Load(), len(evs), gaps)
	for _, l := range strings.Split(d.logs(), "\n") {
		if strings.Contains(l, "stopping") {
			t.Log(l) // how often dumps skipped or repeated live sockets
		}
	}
	if made.Load() < 1000 {
		t.Errorf("only %d churn connections: the test did not stress the dump", made.Load())
	}
}

// TestForgedNetlinkChangesNothing has another root process in the
// daemon's namespace send forged sock_diag replies (a fake socket and a
// fake NLMSG_DONE) to the daemon's netlink port while it polls.
func TestForgedNetlinkChangesNothing(t *testing.T) {
	ns := netnstest.New(t)
	ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	d := startDaemon(t, ns, "")
	d.waitFor("initial listener", 5*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", port)) > 0 })
	pid := d.cmd.Process.Pid

	// The daemon's netlink sockets, from /proc/net/netlink in its netns.
	var ports []uint32
	for _, line := range strings.Split(ns.Run(t, "cat", "/proc/net/netlink"), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == "4" {
			p, _ := strconv.ParseUint(f[2], 10, 32)
			if p != 0 {
				ports = append(ports, uint32(p))
			}
		}
	}
	if len(ports) == 0 {
		t.Fatal("no NETLINK_SOCK_DIAG socket found for the daemon")
	}
	t.Logf("daemon pid %d, sock_diag ports %v", pid, ports)

	forged := forgedReplies(t)
	var sent, refused int
	deadline := time.Now().Add(3 * time.Second)
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for time.Now().Before(deadline) {
			for _, p := range ports {
				for _, m := range forged {
					if err := unix.Sendto(fd, m, unix.MSG_DONTWAIT, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: p}); err != nil {
						refused++
					} else {
						sent++
					}
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("forged unicasts: %d accepted by the kernel, %d refused", sent, refused)

	// Root may multicast to the destroy groups, and the kernel delivers
	// that: only the daemon's own sender check stands between a forged
	// "destroyed" message and a false close of the live listener.
	fake := forgedDestroy(port)
	var mcast int
	err = ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for i := 0; i < 50; i++ {
			for g := uint32(1); g <= 4; g++ {
				if err := unix.Sendto(fd, fake, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (g - 1)}); err == nil {
					mcast++
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if mcast == 0 {
		t.Fatal("the kernel refused every forged multicast: the sender check is untested")
	}
	t.Logf("forged destroy multicasts delivered: %d", mcast)
	time.Sleep(600 * time.Millisecond)
	evs, starts := started(d.events())
	if starts != 1 {
		t.Errorf("%d not_running gaps, want the start's", starts)
	}
	for _, e := range evs {
		if e.str("event") != "appeared" || int(e.num("src_port")) != port {
			t.Errorf("forgery changed the output: %v", e)
		}
	}
	if len(evs) != 1 {
		t.Errorf("%d events, want only the listener's appeared:\n%s", len(evs), dump(evs))
	}
	d.stop()
	if !strings.Contains(d.logs(), "not from the kernel") {
		t.Errorf("forged notifications not counted; stderr:\n%s", d.logs())
	}
}

// forgedDestroy builds a destroy notification for a TCP listener on
// 127.0.0.1:port, the shape the kernel multicasts.
func forgedDestroy(port int) []byte {
	ne := binary.NativeEndian
	var m []byte
	m = ne.AppendUint32(m, snapshot.HeaderLen+snapshot.DiagMsgLen)
	m = ne.AppendUint16(m, snapshot.SockDiagByFam)
	m = ne.AppendUint16(m, 0)
	m = ne.AppendUint32(m, 0)
	m = ne.AppendUint32(m, 0)
	body := make([]byte, snapshot.DiagMsgLen)
	body[0], body[1] = byte(snapshot.FamilyIPv4), byte(snapshot.StateClose)
	binary.BigEndian.PutUint16(body[4:], uint16(port))
	copy(body[8:], []byte{127, 0, 0, 1})
	return append(m, body...)
}

// forgedReplies builds a fake SOCK_DIAG_BY_FAMILY reply and a fake
// NLMSG_DONE for a range of guessed sequence numbers.
func forgedReplies(t *testing.T) [][]byte {
	var out [][]byte
	ne := binary.NativeEndian
	for seq := uint32(0); seq < 64; seq++ {
		var m []byte
		m = ne.AppendUint32(m, snapshot.HeaderLen+snapshot.DiagMsgLen)
		m = ne.AppendUint16(m, snapshot.SockDiagByFam)
		m = ne.AppendUint16(m, snapshot.FlagMulti)
		m = ne.AppendUint32(m, seq)
		m = ne.AppendUint32(m, uint32(os.Getpid()))
		body := make([]byte, snapshot.DiagMsgLen)
		body[0], body[1] = byte(snapshot.FamilyIPv4), byte(snapshot.StateEstablished)
		binary.BigEndian.PutUint16(body[4:], 6666)
		copy(body[8:], []byte{10, 6, 6, 6})
		ne.PutUint32(body[44:], 0xdead)
		m = append(m, body...)
		out = append(out, m)
		var done []byte
		done = ne.AppendUint32(done, snapshot.HeaderLen+4)
		done = ne.AppendUint16(done, snapshot.MsgDone)
		done = ne.AppendUint16(done, snapshot.FlagMulti)
		done = ne.AppendUint32(done, seq)
		done = ne.AppendUint32(done, uint32(os.Getpid()))
		done = ne.AppendUint32(done, 0)
		out = append(out, done)
	}
	return out
}
