//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/audittest"
	"github.com/connlogd/connlogd/internal/netnstest"
)

// acceptOnce is a short-lived server for audittest.Servers: it accepts
// one connection on the listener at descriptor 3, answers with its pid,
// and exits.
const acceptOnce = `
import os, socket
s = socket.socket(fileno=3)
c, _ = s.accept()
c.recv(100)
c.sendall(b"%d\n" % os.getpid())
c.close()
`

// auditConfig is the defaults plus audit attribution: defaultInterval
// keeps the harness's 200ms out, so the daemon polls on the default.
const auditConfig = defaultInterval + "attribution:\n  audit: true\n"

// auditctl runs auditctl, failing the test when it cannot.
func auditctl(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("auditctl")
	if err != nil {
		netnstest.Missing(t, "needs auditctl (Debian package auditd)")
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
	return audittest.KeepState(t, func() string { return auditState(t) },
		func(before, after string) bool { return before == after },
		func(before string) {
			for _, l := range strings.Split(auditctl(t, "-l"), "\n") {
				if strings.Contains(l, "key=connlogd") {
					exec.Command("auditctl", append([]string{"-d"}, strings.Fields(strings.TrimPrefix(l, "-a "))...)...).Run()
				}
			}
			if strings.Contains(before, "enabled 0") {
				exec.Command("auditctl", "-e", "0").Run()
			}
		})
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

// ownerCheck applies audittest's bar to the daemon's closed events of
// the sockets in want (port → pid of the process that made it), by local
// port (byLocal) or by peer port.
func ownerCheck(t *testing.T, d *proc, want map[uint16]int, exe string, byLocal bool) {
	t.Helper()
	closed := func(evs []ev) map[uint16]*audittest.Owner {
		got := map[uint16]*audittest.Owner{}
		for _, e := range evs {
			if e.str("event") != "closed" || e.str("proto") != "tcp" {
				continue
			}
			p := uint16(e.num("src_port"))
			if !byLocal {
				p = uint16(e.num("dst_port"))
			}
			if _, ok := want[p]; ok {
				got[p] = &audittest.Owner{PID: int(e.num("pid")), Exe: e.str("exe"), Desc: string(mustJSON(e))}
			}
		}
		return got
	}
	evs := d.waitFor("the closed events", 30*time.Second, func(evs []ev) bool { return len(closed(evs)) == len(want) })
	if right := audittest.CheckOwners(t, closed(evs), want, exe); right < len(want)-audittest.MaxUnowned {
		t.Logf("connlogd's stderr:\n%s", d.logs())
	}
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
				want, exe := audittest.Clients(t, ns)
				ownerCheck(t, d, want, exe, true)
			})
			t.Run("accept", func(t *testing.T) {
				py := attrPython(t)
				want := audittest.Servers(t, ns, func() *exec.Cmd { return ns.Command(py, "-c", acceptOnce) })
				ownerCheck(t, d, want, py, false)
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
		netnstest.Missing(t, "needs auditd (Debian package auditd)")
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
	// auditd as Debian's package runs it: its service loads
	// /etc/audit/rules.d/audit.rules, whose "-b 8192" raises the kernel's
	// backlog from 64; with 64, a busy machine's auditd, slow to take the
	// records the kernel hands it, makes the kernel drop them (reported as
	// audit_lost gaps) whoever else reads them. Restored after.
	backlog := "64"
	if m := regexp.MustCompile(`\nbacklog_limit (\d+)\n`).FindStringSubmatch(auditctl(t, "-s")); m != nil {
		backlog = m[1]
	}
	auditctl(t, "-b", "8192")
	t.Cleanup(func() { auditctl(t, "-b", backlog) })
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
