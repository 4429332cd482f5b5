//go:build linux

package main

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
)

// shortLived runs n TCP connections that send 100 bytes and close, and m
// UDP sockets that send one datagram and close, spread over about spread,
// and returns the client sockets' local ports. There may be fewer ports
// than sockets, for TCP too: the client closes first, so each of its
// ports sits in TIME_WAIT, and on loopback (net.ipv4.tcp_tw_reuse=2, the
// default) connect reuses such a port once its TIME_WAIT is a second
// old, which happens when the machine is busy and the dials take longer.
// Sockets are told apart by cookie, never by port.
func shortLived(t *testing.T, ns *netnstest.NS, tcpAddr, udpAddr string, n, m, workers int, spread time.Duration) (tcpPorts, udpPorts map[int]bool) {
	t.Helper()
	tcpPorts, udpPorts = map[int]bool{}, map[int]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	pause := spread * time.Duration(workers) / time.Duration(n+m)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs <- ns.Do(func() error {
				payload := make([]byte, 100)
				for i := w; i < n; i += workers {
					c, err := net.Dial("tcp4", tcpAddr)
					if err != nil {
						return err
					}
					if _, err := c.Write(payload); err != nil {
						return err
					}
					mu.Lock()
					tcpPorts[c.LocalAddr().(*net.TCPAddr).Port] = true
					mu.Unlock()
					time.Sleep(2 * time.Millisecond)
					c.Close()
					time.Sleep(pause)
				}
				for i := w; i < m; i += workers {
					c, err := net.Dial("udp4", udpAddr)
					if err != nil {
						return err
					}
					if _, err := c.Write([]byte("ping")); err != nil {
						return err
					}
					mu.Lock()
					udpPorts[c.LocalAddr().(*net.UDPAddr).Port] = true
					mu.Unlock()
					c.Close()
					time.Sleep(pause)
				}
				return nil
			})
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return tcpPorts, udpPorts
}

// servers starts a TCP server that reads until EOF and a UDP socket that
// reads datagrams, in ns.
func servers(t *testing.T, ns *netnstest.NS) (tcpAddr, udpAddr string) {
	t.Helper()
	ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 100)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return ln.Addr().String(), pc.LocalAddr().String()
}

// TestEveryShortConnectionIsLogged: with a 5 s poll, connections living a
// few milliseconds are caught by the destroy notifications alone. On the
// default interval polls run through the burst too, listing connections
// and their TIME_WAIT remnants between the notifications: each socket is
// still reported once, appeared and closed.
func TestEveryShortConnectionIsLogged(t *testing.T) {
	for _, tc := range []struct{ name, cfg string }{
		{"5s", "interval: 5s"},
		{"default_interval", defaultInterval},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // a namespace and a daemon each
			testEveryShortConnectionIsLogged(t, tc.cfg)
		})
	}
}

func testEveryShortConnectionIsLogged(t *testing.T, cfg string) {
	ns := netnstest.New(t)
	// Each of the 2000 TCP clients ends in TIME_WAIT: room for them
	// whatever the namespace's hash size (its default limit is half of it;
	// the host may make it tiny). A full table would end them without it.
	ns.Sysctl(t, "net.ipv4.tcp_max_tw_buckets", "65536")
	tcpAddr, udpAddr := servers(t, ns)
	d := startCase(t, ns, cfg)
	d.waitFor("initial table", time.Minute, func(evs []ev) bool { return len(evs) >= 2 })
	tcpPorts, udpPorts := shortLived(t, ns, tcpAddr, udpAddr, 2000, 500, 8, 3*time.Second)
	_, tport, _ := net.SplitHostPort(tcpAddr)
	_, uport, _ := net.SplitHostPort(udpAddr)
	isClient := func(e ev) (string, bool) {
		p := int(e.num("src_port"))
		switch {
		case e.str("proto") == "tcp" && tcpPorts[p] && e.num("dst_port") == num(tport):
			return "tcp", true
		case e.str("proto") == "udp" && udpPorts[p] && e.num("dst_port") == num(uport):
			return "udp", true
		}
		return "", false
	}
	count := func(evs []ev) (closed int) {
		for _, e := range evs {
			if _, ok := isClient(e); ok && e.str("event") == "closed" {
				closed++
			}
		}
		return closed
	}
	const total, tcpTotal = 2500, 2000
	d.waitFor("every close", 60*time.Second, func(evs []ev) bool { return count(evs) >= total })
	// Past two polls: TIME_WAIT remnants, held back one poll, must not
	// appear or close again.
	d.waitPolls(ns, 2)
	evs := d.events()
	type life struct{ appeared, closed int }
	byCookie := map[string]*life{}
	var bytesOK, tcpClosed, changes int
	for _, e := range evs {
		proto, ok := isClient(e)
		if !ok {
			continue
		}
		key := proto + " " + strings.TrimSpace(string(mustJSON(e["cookie"])))
		l := byCookie[key]
		if l == nil {
			l = &life{}
			byCookie[key] = l
		}
		switch e.str("event") {
		case "appeared":
			l.appeared++
		case "closed":
			l.closed++
			if proto == "tcp" {
				tcpClosed++
				if e.num("bytes_sent") >= 100 {
					bytesOK++
				}
			}
		case "state_changed":
			// A poll saw the connection alive twice, in two states (the
			// server, slow on a busy machine, had not closed its end).
			changes++
			if l.appeared != 1 || l.closed != 0 || e.str("prev_state") == "" {
				t.Errorf("state_changed outside a socket's life (%d appeared, %d closed): %v", l.appeared, l.closed, e)
			}
		default:
			t.Errorf("unexpected %s for a client socket: %v", e.str("event"), e)
		}
	}
	complete := 0
	for k, l := range byCookie {
		if l.appeared == 1 && l.closed == 1 {
			complete++
		} else {
			t.Errorf("%s: %d appeared, %d closed; want 1 and 1", k, l.appeared, l.closed)
		}
	}
	t.Logf("captured %d of %d client sockets (%d TCP client ports for %d connections); %d of %d TCP closes carry bytes_sent >= 100; %d state changes",
		complete, total, len(tcpPorts), tcpTotal, bytesOK, tcpClosed, changes)
	if len(byCookie) != total {
		t.Errorf("%d client sockets seen, want %d", len(byCookie), total)
	}
	if complete*1000 < total*999 {
		t.Errorf("captured %d of %d (< 99.9%%)", complete, total)
	}
	if bytesOK != tcpClosed || tcpClosed != tcpTotal {
		t.Errorf("%d TCP closes, %d with bytes_sent >= 100, want %d", tcpClosed, bytesOK, tcpTotal)
	}
}

// TestOverrunReportsGapAndResyncs shrinks the notification buffer so a
// burst overruns it: a gap event must say so, a resync must follow, and
// no live socket may be reported closed.
func TestOverrunReportsGapAndResyncs(t *testing.T) {
	ns := netnstest.New(t)
	tcpAddr, udpAddr := servers(t, ns)
	closeLong := quietTable(t, ns, 50, 0, 0, 0)
	defer closeLong()
	d := startDaemon(t, ns, "interval: 1s\ndestroy:\n  buffer: 2048")
	d.waitFor("initial table", 5*time.Second, func(evs []ev) bool { return len(evs) >= 100 })
	live := map[string]bool{}
	for _, e := range d.events() {
		if e.str("event") == "appeared" && e.str("state") == "established" {
			live[string(mustJSON(e["cookie"]))] = true
		}
	}
	// Many workers, no pause: a burst.
	shortLived(t, ns, tcpAddr, udpAddr, 3000, 0, 16, 0)
	d.waitFor("gap event", 10*time.Second, func(evs []ev) bool {
		for _, e := range evs {
			if e.str("event") == "gap" && e.str("reason") == "destroy_overrun" {
				return true
			}
		}
		return false
	})
	time.Sleep(2500 * time.Millisecond)
	for _, e := range d.events() {
		if e.str("event") == "closed" && live[string(mustJSON(e["cookie"]))] {
			t.Errorf("live socket reported closed: %v", e)
		}
	}
	if !strings.Contains(d.logs(), "resynchronising") {
		t.Errorf("no resync logged; stderr:\n%s", d.logs())
	}
	if len(live) != 200 {
		t.Errorf("%d live established sockets, want 200 (100 connections)", len(live))
	}
}
