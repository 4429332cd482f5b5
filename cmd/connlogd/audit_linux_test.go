//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/internal/testlock"
)

// clientGap separates the short-lived clients of one test.
const clientGap = 200 * time.Millisecond

// auditConfig is the defaults plus audit attribution.
const auditConfig = "interval: 1s\nattribution:\n  audit: true\n"

// auditctl runs auditctl, failing the test when it cannot.
func auditctl(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("auditctl")
	if err != nil {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatal("auditctl not installed (Debian package auditd)")
		}
		t.Skip("needs auditctl (Debian package auditd)")
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("auditctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// auditState is what connlogd must leave as it found it: the rules and
// the enabled flag.
func auditState(t *testing.T) string {
	t.Helper()
	enabled := ""
	for _, l := range strings.Split(auditctl(t, "-s"), "\n") {
		if strings.HasPrefix(l, "enabled ") {
			enabled = l
		}
	}
	return enabled + "\n" + auditctl(t, "-l")
}

// keepAuditState checks at the end that the audit rules and flag are as
// they were, and puts them back if not.
func keepAuditState(t *testing.T) string {
	t.Helper()
	// The rules are the kernel's: one test at a time, in any package.
	testlock.Exclusive(t, "audit")
	before := auditState(t)
	t.Cleanup(func() {
		if after := auditState(t); after != before {
			t.Errorf("audit state not restored:\nbefore:\n%s\nafter:\n%s", before, after)
			for _, l := range strings.Split(auditctl(t, "-l"), "\n") {
				if strings.Contains(l, "key=connlogd") {
					exec.Command("auditctl", append([]string{"-d"}, strings.Fields(strings.TrimPrefix(l, "-a "))...)...).Run()
				}
			}
			if strings.Contains(before, "enabled 0") {
				exec.Command("auditctl", "-e", "0").Run()
			}
		}
	})
	return before
}

// waitReady waits until the daemon's log says it watches.
func waitReady(t *testing.T, d *proc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.logs(), "msg=watching") {
		if time.Now().After(deadline) {
			t.Fatalf("connlogd not ready in 30s; stderr:\n%s", d.logs())
		}
		select {
		case <-d.done:
			t.Fatalf("connlogd exited: %v\n%s", d.err, d.logs())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ownerCheck applies the bar to the closed events of the sockets in want
// (local port → pid of the process that made it): none carries another
// process, and at most maxUnowned carry none or an incomplete owner.
//
// The bar holds on a loaded machine too (other packages' tests beside
// this one): the daemon's loop may then be held up for seconds (a scan of
// /proc), but closes are stamped when the kernel's notification is read,
// not when the loop gets to them, and the calls they may claim are kept
// until it has.
const maxUnowned = 1

func ownerCheck(t *testing.T, d *proc, want map[int]int, exe string, byLocal bool) {
	t.Helper()
	closed := func(evs []ev) map[int]ev {
		got := map[int]ev{}
		for _, e := range evs {
			if e.str("event") != "closed" || e.str("proto") != "tcp" {
				continue
			}
			p := int(e.num("src_port"))
			if !byLocal {
				p = int(e.num("dst_port"))
			}
			if _, ok := want[p]; ok {
				got[p] = e
			}
		}
		return got
	}
	evs := d.waitFor("the closed events", 30*time.Second, func(evs []ev) bool { return len(closed(evs)) == len(want) })
	// Audit names the executable as the kernel knows it: links resolved.
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	right := 0
	for port, e := range closed(evs) {
		switch {
		case !e.has("pid"):
			t.Logf("port %d: no owner: %s", port, mustJSON(e))
		case int(e.num("pid")) == want[port] && !e.has("exe"):
			// The right process, found after it exited: /proc no longer
			// names its executable. Not the whole owner, not a wrong one.
			t.Logf("port %d: owner without its exe: %s", port, mustJSON(e))
		case int(e.num("pid")) != want[port] || e.str("exe") != exe:
			t.Errorf("port %d: WRONG owner %s, made by pid %d (%s)", port, mustJSON(e), want[port], exe)
		default:
			right++
		}
	}
	t.Logf("%d of %d closed events carry the process that made them", right, len(want))
	if right < len(want)-maxUnowned {
		t.Errorf("only %d of %d closed events carry their process; stderr:\n%s", right, len(want), d.logs())
	}
}

// shortLivedClients runs 30 bash processes, one after another, each
// connecting to the server, sending its pid, waiting 50 ms and closing.
// It returns each client socket's local port → pid.
func shortLivedClients(t *testing.T, ns *netnstest.NS) (map[int]int, string) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("needs bash")
	}
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	pids := map[int]int{}
	var unread []string // what clients sent that was not a pid
	var mu sync.Mutex
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				io.Copy(io.Discard, r) // the client closes first
				mu.Lock()
				defer mu.Unlock()
				if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
					pids[int(netip.MustParseAddrPort(c.RemoteAddr().String()).Port())] = pid
				} else {
					unread = append(unread, fmt.Sprintf("%s sent %q", c.RemoteAddr(), line))
				}
			}()
		}
	}()
	// The script exits 0 only when it connected and sent its pid: a
	// client that could not connect (the shell's redirection failed)
	// made no connection, so it is run again rather than taken for one.
	script := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d || exit 3; echo $$ >&3 || exit 4; read -t 0.05 <&3; exec 3>&-; exit 0", port)
	heard := func() int { mu.Lock(); defer mu.Unlock(); return len(pids) }
	var longest time.Duration
	for i := range 30 {
		if i > 0 {
			// Calls of one uid to one server are told apart by when
			// they were made and whether their process still holds its
			// socket: a client starting before connlogd has read the
			// last one's close (a few ms; more on a machine with many
			// more runnable threads than cores) ties with it, and ties
			// get no owner. Back-to-back clients are the bench's.
			time.Sleep(clientGap)
		}
		for attempt := 1; ; attempt++ {
			cmd := ns.Command(bash, "-c", script)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			longest = max(longest, time.Since(start))
			if err == nil {
				break
			}
			if attempt == 3 {
				t.Fatalf("client %d failed 3 times; last: %v\n%s", i, err, out)
			}
			t.Logf("client %d, attempt %d: %v: %s", i, attempt, err, out)
		}
		// The server has this client's pid before the next one starts,
		// so a lost client is named here, and two clients can never
		// share a port (one key) unnoticed.
		deadline := time.Now().Add(10 * time.Second)
		for heard() < i+1 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := heard(); n != i+1 {
			ln.Close()
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("after client %d the server had heard %d distinct client ports, want %d; not a pid: %q", i, n, i+1, unread)
		}
	}
	t.Logf("longest client life, ip netns exec included: %v", longest)
	ln.Close()
	wg.Wait()
	return pids, bash
}

// shortLivedServers runs 30 python3 processes, one after another, each
// accepting one connection on a listener it inherits, answering with its
// pid and exiting. It returns each connection's client port → server pid.
func shortLivedServers(t *testing.T, ns *netnstest.NS) (map[int]int, string) {
	t.Helper()
	py := attrPython(t)
	var ln *net.TCPListener
	if err := ns.Do(func() error {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err == nil {
			ln = l.(*net.TCPListener)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	const server = `
import os, socket
s = socket.socket(fileno=3)
c, _ = s.accept()
c.recv(100)
c.sendall(b"%d\n" % os.getpid())
c.close()
`
	want := map[int]int{}
	var longest time.Duration
	for range 30 {
		cmd := ns.Command(py, "-c", server)
		cmd.ExtraFiles = []*os.File{lf}
		cmd.Stderr = os.Stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var c net.Conn
		if err := ns.Do(func() (err error) { c, err = net.Dial("tcp4", ln.Addr().String()); return }); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(c, "hello")
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("server: %v", err)
		}
		longest = max(longest, time.Since(start))
		if pid, err := strconv.Atoi(strings.TrimSpace(line)); err != nil || pid != cmd.Process.Pid {
			t.Fatalf("server answered %q; its pid is %d", line, cmd.Process.Pid)
		}
		want[int(netip.MustParseAddrPort(c.LocalAddr().String()).Port())] = cmd.Process.Pid
	}
	t.Logf("longest server life, ip netns exec included: %v", longest)
	return want, py
}

// TestAuditShortLived is the bar of audit attribution: connections of
// processes that live less than a poll interval, on the defaults plus
// attribution.audit, name their process on both sides; with auditd
// running or not; and the audit rules and flag are as found afterwards.
func TestAuditShortLived(t *testing.T) {
	for _, withAuditd := range []bool{false, true} {
		t.Run(map[bool]string{false: "without_auditd", true: "with_auditd"}[withAuditd], func(t *testing.T) {
			netnstest.Require(t)
			before := keepAuditState(t)
			if withAuditd {
				startAuditd(t)
			} else if strings.Contains(auditctl(t, "-s"), "\npid ") && !strings.Contains(auditctl(t, "-s"), "\npid 0\n") {
				t.Skip("an auditd runs on this machine")
			}
			running := auditState(t) // auditd may have changed the flag
			ns := netnstest.New(t)
			d := startDaemon(t, ns, auditConfig)
			waitReady(t, d)
			if !strings.Contains(auditctl(t, "-l"), "key=connlogd") {
				t.Fatalf("no connlogd rules while it runs:\n%s\nstderr:\n%s", auditctl(t, "-l"), d.logs())
			}
			t.Run("connect", func(t *testing.T) {
				want, exe := shortLivedClients(t, ns)
				ownerCheck(t, d, want, exe, true)
			})
			t.Run("accept", func(t *testing.T) {
				want, exe := shortLivedServers(t, ns)
				ownerCheck(t, d, want, exe, false)
			})
			d.stop()
			if after := auditState(t); after != running {
				t.Errorf("after connlogd stopped:\n%s\nbefore it started:\n%s", after, running)
			}
			_ = before
		})
	}
}

// startAuditd runs Debian's auditd for the test (its own log directory),
// and stops it at cleanup.
func startAuditd(t *testing.T) {
	t.Helper()
	path, err := exec.LookPath("auditd")
	if err != nil {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatal("auditd not installed (Debian package auditd)")
		}
		t.Skip("needs auditd")
	}
	if st := auditctl(t, "-s"); !strings.Contains(st, "\npid 0\n") {
		t.Skip("an auditd already runs on this machine")
	}
	enabled := "0"
	if strings.Contains(auditctl(t, "-s"), "enabled 1") {
		enabled = "1"
	}
	dir := t.TempDir()
	conf := dir + "/auditd.conf"
	if err := os.WriteFile(conf, []byte("log_file = "+dir+"/audit.log\nlog_format = ENRICHED\nflush = INCREMENTAL_ASYNC\nfreq = 50\nnum_logs = 1\nmax_log_file = 8\nmax_log_file_action = ROTATE\nspace_left = 2\nadmin_space_left = 1\ndisk_full_action = SUSPEND\ndisk_error_action = SUSPEND\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "-f", "-n", "-c", dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		auditctl(t, "-e", enabled) // auditd switched auditing on for itself
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(auditctl(t, "-s"), fmt.Sprintf("\npid %d\n", cmd.Process.Pid)) {
		if time.Now().After(deadline) {
			t.Fatalf("auditd did not register in 10s:\n%s\nauditd said:\n%s", auditctl(t, "-s"), out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAuditKilled: a connlogd killed with SIGKILL leaves its rules and the
// flag it set; the next run removes them at start and restores, at its
// exit, the flag the killed run found.
func TestAuditKilled(t *testing.T) {
	netnstest.Require(t)
	before := keepAuditState(t)
	ns := netnstest.New(t)
	d := startDaemon(t, ns, auditConfig)
	waitReady(t, d)
	if !strings.Contains(auditctl(t, "-l"), "key=connlogd") {
		t.Fatalf("no connlogd rules while it runs; stderr:\n%s", d.logs())
	}
	d.cmd.Process.Kill()
	<-d.done
	left := auditctl(t, "-l")
	if !strings.Contains(left, "key=connlogd") {
		t.Fatalf("killed, yet its rules are gone:\n%s", left)
	}
	d2 := startDaemon(t, ns, auditConfig)
	waitReady(t, d2)
	if n := strings.Count(auditctl(t, "-l"), "key=connlogd"); n != strings.Count(left, "key=connlogd") {
		t.Errorf("%d connlogd rules after restart, %d before: stale ones not removed", n, strings.Count(left, "key=connlogd"))
	}
	if !strings.Contains(d2.logs(), "removed audit rules a previous run left") {
		t.Errorf("restart did not say it removed stale rules; stderr:\n%s", d2.logs())
	}
	d2.stop()
	if after := auditState(t); after != before {
		t.Errorf("after kill, restart and stop:\n%s\nwant as before:\n%s", after, before)
	}
}
