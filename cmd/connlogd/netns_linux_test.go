//go:build linux

package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
)

func nsInode(t *testing.T, ns *netnstest.NS) float64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(ns.Path, &st); err != nil {
		t.Fatal(err)
	}
	return float64(st.Ino)
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func inNetns(evs []ev, kind string, port int, ino float64) []ev {
	var out []ev
	for _, e := range match(evs, kind, "tcp", port) {
		if e.num("netns") == ino {
			out = append(out, e)
		}
	}
	return out
}

// TestAllNamespaces runs connlogd in the host namespace with
// `namespaces: all`: listeners in two other namespaces, one created after
// the daemon started, are logged with their namespace, and deleting one
// namespace logs its sockets' closes and releases every descriptor the
// daemon had in it.
func TestAllNamespaces(t *testing.T) {
	netnstest.Require(t)
	nsA := netnstest.New(t)
	lnA := listenIn(t, nsA, "tcp4", "127.0.0.1:0")
	defer lnA.Close()
	portA := lnA.Addr().(*net.TCPAddr).Port

	dir := t.TempDir()
	out := filepath.Join(dir, "events.json")
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "interval: 300ms\nnamespaces: all\nnamespace_rescan: 500ms\nsinks:\n  - type: file\n    path: "+out+"\n")
	d := &proc{t: t, out: out, stderr: newBuf(), done: make(chan struct{})}
	d.cmd = exec.Command(connlogdBin, "-config", cfg)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)

	inoA := nsInode(t, nsA)
	evs := d.waitFor("listener in the first namespace", 10*time.Second, func(evs []ev) bool { return len(inNetns(evs, "appeared", portA, inoA)) > 0 })
	if e := inNetns(evs, "appeared", portA, inoA)[0]; e.str("netns_name") != nsA.Name {
		t.Errorf("netns_name %q, want %q", e.str("netns_name"), nsA.Name)
	}
	time.Sleep(time.Second) // settle: every namespace of the machine found
	fdsBefore := fdCount(t, d.cmd.Process.Pid)

	nsB := netnstest.New(t)
	inoB := nsInode(t, nsB)
	lnB := listenIn(t, nsB, "tcp6", "[::1]:0")
	defer lnB.Close()
	portB := lnB.Addr().(*net.TCPAddr).Port
	evs = d.waitFor("listener in a namespace made after start-up", 10*time.Second, func(evs []ev) bool { return len(inNetns(evs, "appeared", portB, inoB)) > 0 })
	apB := inNetns(evs, "appeared", portB, inoB)[0]
	if apB["initial"] == true || apB.str("netns_name") != nsB.Name {
		t.Errorf("appeared in the new namespace: %v", apB)
	}
	if n := fdCount(t, d.cmd.Process.Pid); n <= fdsBefore {
		t.Errorf("daemon fds %d with the new namespace watched, %d before: expected more", n, fdsBefore)
	}

	// Delete nsB while its listener lives (held by this test process, so
	// the namespace itself lives on until we close it).
	if out, err := exec.Command("ip", "netns", "del", nsB.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	evs = d.waitFor("closes of the deleted namespace", 10*time.Second, func(evs []ev) bool { return len(inNetns(evs, "closed", portB, inoB)) > 0 })
	if c := inNetns(evs, "closed", portB, inoB)[0]; c.str("reason") != "netns_gone" {
		t.Errorf("closed in the deleted namespace: %v", c)
	}
	time.Sleep(time.Second)
	if n := fdCount(t, d.cmd.Process.Pid); n != fdsBefore {
		t.Errorf("daemon fds %d after the namespace went, %d before it came: descriptors leaked", n, fdsBefore)
	}
	// The first namespace is untouched.
	if n := len(inNetns(d.events(), "closed", portA, inoA)); n != 0 {
		t.Errorf("listener of the remaining namespace reported closed")
	}
}
