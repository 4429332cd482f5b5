//go:build linux

package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
)

// startHostDaemon runs connlogd in the test's own (host) namespace with
// exactly cfg and a file sink: nothing else is set, so what is not in cfg
// is the default.
func startHostDaemon(t *testing.T, cfg string) *proc {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "events.json")
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, cfg+"\nsinks:\n  - type: file\n    path: "+out+"\n")
	d := &proc{t: t, out: out, stderr: newBuf(), done: make(chan struct{})}
	d.cmd = exec.Command(connlogdBin, "-config", path)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)
	// Ready once the first poll of every namespace is done.
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(d.logs(), "msg=watching"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("connlogd not ready in 2 min:\n%s", d.logs())
		}
	}
	return d
}

// clientEvents returns the events of the client sockets (local port in
// ports, remote port server) in the namespace of inode ino. Inodes are
// reused: ports tell this namespace's sockets from a later one's.
func clientEvents(evs []ev, ports map[int]bool, server int, ino float64) []ev {
	var out []ev
	for _, e := range evs {
		p := int(e.num("src_port"))
		if e.str("proto") == "tcp" && ports[p] && int(e.num("dst_port")) == server && e.num("netns") == ino {
			out = append(out, e)
		}
	}
	return out
}

// clientLives counts, per client port, the appeared and closed events of
// the client sockets.
func clientLives(evs []ev, ports map[int]bool, server int, ino float64) (appeared, closed map[int]int) {
	appeared, closed = map[int]int{}, map[int]int{}
	for _, e := range clientEvents(evs, ports, server, ino) {
		p := int(e.num("src_port"))
		switch e.str("event") {
		case "appeared":
			appeared[p]++
		case "closed":
			closed[p]++
		}
	}
	return appeared, closed
}

// checkLives waits for every client socket's close, then checks each
// appeared and closed exactly once.
func checkLives(t *testing.T, d *proc, ports map[int]bool, server int, ino float64) []ev {
	t.Helper()
	var evs []ev
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		evs = d.events()
		if _, closed := clientLives(evs, ports, server, ino); len(closed) == len(ports) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
	}
	appeared, closed := clientLives(evs, ports, server, ino)
	bad := 0
	for p := range ports {
		if appeared[p] != 1 || closed[p] != 1 {
			bad++
			t.Errorf("client port %d: %d appeared, %d closed; want 1 and 1", p, appeared[p], closed[p])
		}
	}
	if bad > 0 {
		ns := strconv.FormatFloat(ino, 'f', 0, 64)
		var lines []string
		for _, l := range strings.Split(d.logs(), "\n") {
			if strings.Contains(l, ns) || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
				lines = append(lines, l)
			}
		}
		t.Errorf("%d of %d client sockets not logged whole in namespace %s; daemon log about it:\n%s", bad, len(ports), ns, strings.Join(lines, "\n"))
	}
	return evs
}

// TestNewNamedNamespaceOnDefaults: with namespaces: all and nothing else
// set (a 5 s rescan), a namespace made with `ip netns add` is watched in
// time for connections made in it 300 ms later, and deleted a second
// after them. Twice: a rescan falling by chance in the 300 ms would make
// one round pass without the watch.
func TestNewNamedNamespaceOnDefaults(t *testing.T) {
	netnstest.Require(t)
	d := startHostDaemon(t, "namespaces: all")
	for range 2 {
		ns := netnstest.New(t)
		made := time.Now()
		ino := nsInode(t, ns)
		time.Sleep(time.Until(made.Add(300 * time.Millisecond))) // the scenario: clients start 300 ms after the namespace
		tcpAddr, _ := servers(t, ns)
		ports, _ := shortLived(t, ns, tcpAddr, "", 50, 0, 1, time.Second)
		time.Sleep(time.Second)
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns del: %v: %s", err, out)
		}
		if len(ports) != 50 {
			t.Fatalf("%d client ports, want 50", len(ports))
		}
		_, sport, _ := net.SplitHostPort(tcpAddr)
		evs := checkLives(t, d, ports, int(num(sport)), ino)
		for _, e := range clientEvents(evs, ports, int(num(sport)), ino) {
			if e.str("netns_name") != ns.Name {
				t.Errorf("event without the namespace's name: %v", e)
				break
			}
		}
	}
}

// unsharedClients is run by `unshare -n`: in its new namespace, bound
// nowhere, it brings loopback up, waits 300 ms, serves and makes 50
// connections over a second, and prints its namespace's inode, the
// server's port and each client port.
const unsharedClients = `
import os, socket, sys, threading, time, subprocess
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
print("netns", os.stat("/proc/self/ns/net").st_ino, flush=True)
time.sleep(0.3)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print("server", srv.getsockname()[1], flush=True)
def serve():
    while True:
        c, _ = srv.accept()
        while c.recv(4096):
            pass
        c.close()
threading.Thread(target=serve, daemon=True).start()
for i in range(50):
    c = socket.create_connection(srv.getsockname())
    c.sendall(b"x" * 100)
    print("client", c.getsockname()[1], flush=True)
    time.sleep(0.002)
    c.close()
    time.sleep(0.02)
time.sleep(1)
print("done", flush=True)
`

// TestUnsharedNamespaceOnDefaults: a namespace no file binds, made by a
// process started with `unshare -n`, is watched from its first process's
// start, on the defaults.
func TestUnsharedNamespaceOnDefaults(t *testing.T) {
	netnstest.Require(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("needs unshare (util-linux)")
	}
	d := startHostDaemon(t, "namespaces: all")
	for range 2 { // twice, as above
		ports, server, ino := runUnshared(t)
		evs := checkLives(t, d, ports, server, ino)
		for _, e := range clientEvents(evs, ports, server, ino) {
			if e.str("netns_name") != "" {
				t.Errorf("a namespace bound nowhere has a name: %v", e)
				break
			}
		}
	}
}

// runUnshared runs unsharedClients under `unshare -n` and returns its
// client ports, server port and namespace inode.
func runUnshared(t *testing.T) (ports map[int]bool, server int, ino float64) {
	t.Helper()
	cmd := exec.Command("unshare", "-n", "python3", "-c", unsharedClients)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ports = map[int]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "netns":
			ino = float64(v)
		case "server":
			server = v
		case "client":
			ports[v] = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("unshare -n python3: %v", err)
	}
	if len(ports) != 50 || ino == 0 || server == 0 {
		t.Fatalf("%d client ports, netns %v, server %d", len(ports), ino, server)
	}
	return ports, server, ino
}
