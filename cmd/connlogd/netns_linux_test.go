//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// daemonSocketsIn returns the inodes of the netlink sockets that both
// live in the namespace ns refers to and are open in process pid.
func daemonSocketsIn(t *testing.T, pid int, ns *os.File) []uint64 {
	t.Helper()
	held := map[uint64]bool{}
	ents, err := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		link, err := os.Readlink("/proc/" + itoa(pid) + "/fd/" + e.Name())
		if err != nil {
			continue
		}
		var ino uint64
		if _, err := fmt.Sscanf(link, "socket:[%d]", &ino); err == nil {
			held[ino] = true
		}
	}
	var table []byte
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // left locked if anything fails: the thread is discarded
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		table, err = os.ReadFile("/proc/thread-self/net/netlink")
		if err2 := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err2 != nil {
			errc <- err2
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		ino, _ := strconv.ParseUint(f[len(f)-1], 10, 64)
		if held[ino] {
			out = append(out, ino)
		}
	}
	return out
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
// TestAllNamespaces runs on the harness's quick settings, and on the
// defaults (poll interval and rescan period), where a namespace made or
// deleted after start-up is found by the watcher, not the rescan.
func TestAllNamespaces(t *testing.T) {
	for _, c := range []struct{ name, cfg string }{
		{"quick", "interval: 300ms\nnamespaces: all\nnamespace_rescan: 500ms\n"},
		{"defaults", "namespaces: all\n"},
	} {
		t.Run(c.name, func(t *testing.T) { testAllNamespaces(t, c.cfg) })
	}
}

func testAllNamespaces(t *testing.T, config string) {
	netnstest.Require(t)
	nsA := netnstest.New(t)
	lnA := listenIn(t, nsA, "tcp4", "127.0.0.1:0")
	defer lnA.Close()
	portA := lnA.Addr().(*net.TCPAddr).Port

	dir := t.TempDir()
	out := filepath.Join(dir, "events.json")
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, config+"sinks:\n  - type: file\n    path: "+out+"\n")
	d := &proc{t: t, out: out, stderr: newBuf(), done: make(chan struct{})}
	d.cmd = exec.Command(connlogdBin, "-config", cfg)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)

	// namespaces: all sees the namespaces and traffic of every test running
	// beside this one, of other packages too: every assertion is about
	// nsA's or nsB's own sockets, and the deadlines allow for a busy daemon.
	inoA := nsInode(t, nsA)
	evs := d.waitFor("listener in the first namespace", 60*time.Second, func(evs []ev) bool { return len(inNetns(evs, "appeared", portA, inoA)) > 0 })
	if e := inNetns(evs, "appeared", portA, inoA)[0]; e.str("netns_name") != nsA.Name {
		t.Errorf("netns_name %q, want %q", e.str("netns_name"), nsA.Name)
	}

	nsB := netnstest.New(t)
	inoB := nsInode(t, nsB)
	lnB := listenIn(t, nsB, "tcp6", "[::1]:0")
	defer lnB.Close()
	portB := lnB.Addr().(*net.TCPAddr).Port
	evs = d.waitFor("listener in a namespace made after start-up", 60*time.Second, func(evs []ev) bool { return len(inNetns(evs, "appeared", portB, inoB)) > 0 })
	apB := inNetns(evs, "appeared", portB, inoB)[0]
	if apB["initial"] == true || apB.str("netns_name") != nsB.Name {
		t.Errorf("appeared in the new namespace: %v", apB)
	}
	// Keep a handle on nsB to look inside it after its deletion: which of
	// its netlink sockets are the daemon's?
	nsFile, err := os.Open(nsB.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer nsFile.Close()
	if n := len(daemonSocketsIn(t, d.cmd.Process.Pid, nsFile)); n == 0 {
		t.Fatal("no daemon netlink socket found in the new namespace: the leak check below would prove nothing")
	}

	// Delete nsB while its listener lives (held by this test process, so
	// the namespace itself lives on until we close it).
	if out, err := exec.Command("ip", "netns", "del", nsB.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	evs = d.waitFor("closes of the deleted namespace", 60*time.Second, func(evs []ev) bool { return len(inNetns(evs, "closed", portB, inoB)) > 0 })
	if c := inNetns(evs, "closed", portB, inoB)[0]; c.str("reason") != "netns_gone" {
		t.Errorf("closed in the deleted namespace: %v", c)
	}
	// The daemon lets go of the namespace after logging its closes: poll.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left := daemonSocketsIn(t, d.cmd.Process.Pid, nsFile)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("30s after the closes the daemon still holds %d netlink sockets in the deleted namespace (inodes %v)", len(left), left)
			break
		}
	}
	// The first namespace is untouched.
	if n := len(inNetns(d.events(), "closed", portA, inoA)); n != 0 {
		t.Errorf("listener of the remaining namespace reported closed")
	}
}
