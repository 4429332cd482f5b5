//go:build linux

package attribution

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/snapshot"
)

// These tests run real processes (python3) in a network namespace of
// their own, dump its sockets with package diag, and check what the
// Resolver says of them against /proc.

var (
	pythonOnce sync.Once
	pythonPath string
	pythonErr  error
)

// python returns the real python3 interpreter (not a pyenv shim, which
// would add a process per start), skipping the test without one.
func python(t *testing.T) string {
	t.Helper()
	pythonOnce.Do(func() {
		var p string
		if p, pythonErr = exec.LookPath("python3"); pythonErr != nil {
			return
		}
		out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output()
		if pythonErr = err; err == nil {
			pythonPath = strings.TrimSpace(string(out))
		}
	})
	if pythonErr != nil {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatalf("python3: %v", pythonErr)
		}
		t.Skipf("needs python3: %v", pythonErr)
	}
	return pythonPath
}

// pyProc is a python3 process talking line by line on stdin and stdout.
type pyProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	pid   int
}

// start runs cmd, a python3 process or one that execs into it, and stops
// it at cleanup.
func start(t *testing.T, cmd *exec.Cmd) *pyProc {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &pyProc{t: t, cmd: cmd, in: in, lines: make(chan string, 16), pid: cmd.Process.Pid}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *pyProc) stop() {
	p.in.Close()
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// line returns the next line the process prints.
func (p *pyProc) line() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("pid %d exited before printing a line", p.pid)
		}
		return l
	case <-time.After(20 * time.Second):
		p.t.Fatalf("pid %d printed nothing for 20s", p.pid)
	}
	return ""
}

func (p *pyProc) expect(want string) {
	p.t.Helper()
	if l := p.line(); l != want {
		p.t.Fatalf("pid %d printed %q; want %q", p.pid, l, want)
	}
}

func (p *pyProc) send(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, s+"\n"); err != nil {
		p.t.Fatal(err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}

var allRequests = diag.Requests(
	[]snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
	[]snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, true)

func openDiag(t *testing.T, ns *netnstest.NS) *diag.Conn {
	t.Helper()
	var c *diag.Conn
	if err := ns.Do(func() (err error) { c, err = diag.Open(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dump(t *testing.T, c *diag.Conn) *snapshot.Table {
	t.Helper()
	var tab snapshot.Table
	if err := c.Dump(&tab, allRequests); err != nil {
		t.Fatal(err)
	}
	return &tab
}

// findSock returns the socket with local port port, and remote port
// remote unless it is -1, in state st unless it is 0.
func findSock(tab *snapshot.Table, port, remote int, st snapshot.State) *snapshot.Socket {
	for i := range tab.Sockets {
		s := &tab.Sockets[i]
		if int(s.Src.Port()) == port && (remote < 0 || int(s.Dst.Port()) == remote) && (st == 0 || s.State == st) {
			return s
		}
	}
	return nil
}

func findEvent(evs []event.Event, kind event.Kind, port, remote int) *event.Event {
	for i := range evs {
		e := &evs[i]
		if e.Kind == kind && int(e.Socket.Src.Port()) == port && (remote < 0 || int(e.Socket.Dst.Port()) == remote) {
			return e
		}
	}
	return nil
}

// wantProcess checks an event's process against /proc/PID of pid, read
// now, and the name of our own effective uid (the processes run as us).
func wantProcess(t *testing.T, what string, ev *event.Event, pid int) {
	t.Helper()
	if ev == nil {
		t.Fatalf("%s: no event", what)
	}
	p := ev.Process
	if p == nil {
		t.Fatalf("%s: no process; want pid %d", what, pid)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	name := strconv.Itoa(os.Geteuid())
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	if p.PID != pid || p.Comm != strings.TrimSpace(string(comm)) || p.Exe != exe || p.User != name || p.UID != uint32(os.Geteuid()) {
		t.Errorf("%s: process %+v; want pid %d, comm %q, exe %q, user %q", what, *p, pid, strings.TrimSpace(string(comm)), exe, name)
	}
}

const pyServer = `
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
print("accepted", flush=True)
while c.recv(4096):
    pass
c.close()
print("eof", flush=True)
sys.stdin.read()
`

const pyClient = `
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(c.getsockname()[1], flush=True)
sys.stdin.readline()
c.close()
print("closed", flush=True)
sys.stdin.read()
`

// TestServerAndClient runs the daemon's pipeline (dump, Refresh, Diff,
// Annotate) over a python3 server and client.
func TestServerAndClient(t *testing.T) {
	py := python(t)
	ns := netnstest.New(t)
	conn := openDiag(t, ns)
	srv := start(t, ns.Command(py, "-c", pyServer))
	port := atoi(t, srv.line())
	cli := start(t, ns.Command(py, "-c", pyClient, strconv.Itoa(port)))
	cport := atoi(t, cli.line())
	srv.expect("accepted")

	r := New(config.Attribution{Process: true, Cmdline: true, CmdlineMaxBytes: 48, Cgroup: true})
	t.Cleanup(func() { r.Close() })
	tr := r.NewTracker()
	d := differ.New(differ.Options{})
	poll := func() []event.Event {
		tab := dump(t, conn)
		tr.Refresh(tab)
		evs, err := d.Diff(tab, time.Now(), conn)
		if err != nil {
			t.Fatal(err)
		}
		tr.Annotate(evs)
		return evs
	}
	evs := poll()
	if w := r.Warnings(); len(w) != 0 {
		t.Errorf("warnings as root: %v", w)
	}

	// Copies: the differ reuses its slice of events.
	ln := clone(findEvent(evs, event.Appeared, port, 0))
	acc := clone(findEvent(evs, event.Appeared, port, cport))
	cl := clone(findEvent(evs, event.Appeared, cport, port))
	wantProcess(t, "listener", ln, srv.pid)
	wantProcess(t, "accepted", acc, srv.pid)
	wantProcess(t, "client", cl, cli.pid)
	for _, c := range []struct {
		what string
		ev   *event.Event
		want event.Direction
	}{{"listener", ln, event.DirectionListen}, {"accepted", acc, event.DirectionInbound}, {"client", cl, event.DirectionOutbound}} {
		if c.ev.Direction != c.want {
			t.Errorf("%s: direction %q; want %q", c.what, c.ev.Direction, c.want)
		}
	}
	if got, want := cl.Process.Cmdline, strings.Join([]string{py, "-c", pyClient, strconv.Itoa(port)}, " ")[:48]; got != want {
		t.Errorf("client cmdline %q; want %q, its first 48 bytes", got, want)
	}
	// The cgroup is the one /proc says the client is in.
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cli.pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(cg)) {
		if path, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok && (cl.Cgroup == nil || cl.Cgroup.Path != path) {
			t.Errorf("client cgroup %+v; want path %q", cl.Cgroup, path)
		}
	}

	// The client closes and exits: its socket lingers in TIME_WAIT without
	// an inode, and the events about it still name the client.
	cli.send("close")
	cli.expect("closed")
	srv.expect("eof")
	cli.stop()
	var tw *event.Event
	for deadline := time.Now().Add(10 * time.Second); tw == nil; {
		if time.Now().After(deadline) {
			t.Fatal("the client's socket never reached time_wait")
		}
		for _, e := range poll() {
			if int(e.Socket.Src.Port()) == cport && e.Socket.State == snapshot.StateTimeWait {
				tw = &e
				break
			}
		}
	}
	if tw.Socket.Inode != 0 {
		t.Errorf("time_wait remnant has inode %d; the test assumes 0", tw.Socket.Inode)
	}
	wantPID(t, "client in time_wait", tw, cli.pid)
	// The destroy notification of the client's socket carries its last
	// dumped record: still the client.
	closed := []event.Event{{Kind: event.Closed, Socket: cl.Socket, Reason: event.ReasonDestroyed}}
	tr.Annotate(closed)
	wantPID(t, "client closed", &closed[0], cli.pid)
	if closed[0].Direction != event.DirectionOutbound {
		t.Errorf("client closed: direction %q; want outbound", closed[0].Direction)
	}
}

func clone(e *event.Event) *event.Event {
	if e == nil {
		return nil
	}
	c := *e
	return &c
}

func wantPID(t *testing.T, what string, ev *event.Event, pid int) {
	t.Helper()
	if ev.Process == nil || ev.Process.PID != pid {
		t.Errorf("%s: process %+v; want pid %d", what, ev.Process, pid)
	}
}

const pyForked = `
import os, signal, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
child = os.fork()
if child == 0:
    signal.pause()
    os._exit(0)
print(s.getsockname()[1], child, flush=True)
sys.stdin.read()
`

// TestSharedListener: a listener shared by a parent and its child
// belongs to the lower pid; when that one exits, to the other.
func TestSharedListener(t *testing.T) {
	py := python(t)
	ns := netnstest.New(t)
	conn := openDiag(t, ns)
	parent := start(t, ns.Command(py, "-c", pyForked))
	f := strings.Fields(parent.line())
	port, child := atoi(t, f[0]), atoi(t, f[1])
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })

	r := New(config.Attribution{Process: true, CmdlineMaxBytes: 1})
	t.Cleanup(func() { r.Close() })
	tr := r.NewTracker()
	owner := func() int {
		tab := dump(t, conn)
		tr.Refresh(tab)
		s := findSock(tab, port, 0, snapshot.StateListen)
		if s == nil {
			t.Fatal("listener not in the dump")
		}
		evs := []event.Event{{Kind: event.Appeared, Socket: *s}}
		tr.Annotate(evs)
		if evs[0].Process == nil {
			return 0
		}
		return evs[0].Process.PID
	}
	first, other := min(parent.pid, child), max(parent.pid, child)
	if got := owner(); got != first {
		t.Fatalf("shared listener's owner %d; want the lower pid %d (parent %d, child %d)", got, first, parent.pid, child)
	}
	if first == parent.pid {
		parent.stop()
	} else {
		syscall.Kill(child, syscall.SIGKILL)
	}
	// A killed process's descriptors are closed once it is reaped; its
	// pid then leaves /proc. Exit noticed, socket attributed again.
	for deadline := time.Now().Add(10 * time.Second); ; {
		got := owner()
		if got == other {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("owner still %d 10s after pid %d was killed; want %d", got, first, other)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cgroup2 returns the cgroup v2 mount point, skipping the test without.
func cgroup2(t *testing.T) string {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mount, root, ok := cgroup2Mount(info)
	if !ok || root != "/" {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatal("needs a cgroup v2 hierarchy mounted at its root")
		}
		t.Skip("needs a cgroup v2 hierarchy mounted at its root")
	}
	return mount
}

const pyListen = `
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`

// TestCgroup moves a process into a cgroup made for the test, shaped like
// a docker container's, and checks the socket it opens there.
func TestCgroup(t *testing.T) {
	py := python(t)
	ns := netnstest.New(t)
	mount := cgroup2(t)
	conn := openDiag(t, ns)
	id := fmt.Sprintf("%064x", uint64(os.Getpid())<<20|uint64(time.Now().UnixNano()&0xfffff))
	slice := fmt.Sprintf("/connlogd-test-%d.slice", os.Getpid())
	path := slice + "/docker-" + id + ".scope"
	if err := os.MkdirAll(filepath.Join(mount, path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered before the process starts, so it runs after the process
	// is stopped (cleanups run last-in first-out).
	t.Cleanup(func() { removeCgroup(t, mount, path, slice) })
	// The shell waits to be moved into the cgroup (from here: under `ip
	// netns exec` it has a /sys of its own, without the cgroup mount),
	// then becomes python3, whose socket is created there.
	p := start(t, ns.Command("sh", "-c", `read go && exec "$0" -c "$1"`, py, pyListen))
	if err := os.WriteFile(filepath.Join(mount, path, "cgroup.procs"), []byte(strconv.Itoa(p.pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.send("go")
	port := atoi(t, p.line())

	r := New(config.Attribution{Process: true, Cgroup: true, CmdlineMaxBytes: 1})
	t.Cleanup(func() { r.Close() })
	tr := r.NewTracker()
	tab := dump(t, conn)
	tr.Refresh(tab)
	s := findSock(tab, port, 0, snapshot.StateListen)
	if s == nil {
		t.Fatal("listener not in the dump")
	}
	evs := []event.Event{{Kind: event.Appeared, Socket: *s}}
	tr.Annotate(evs)
	want := event.Cgroup{Path: path, SystemdUnit: "docker-" + id + ".scope", ContainerID: id}
	if evs[0].Cgroup == nil || *evs[0].Cgroup != want {
		t.Errorf("cgroup %+v; want %+v", evs[0].Cgroup, want)
	}
	wantProcess(t, "listener", &evs[0], p.pid)
	// The socket's cgroup holds one process: that is the only descriptor
	// table read.
	if st := r.Stats(); st.FDTables != 1 {
		t.Errorf("read %d descriptor tables; want 1 (the cgroup's only process)", st.FDTables)
	}
}

// removeCgroup removes the test's cgroups once their process is gone.
func removeCgroup(t *testing.T, mount string, dirs ...string) {
	for _, d := range dirs {
		full := filepath.Join(mount, d)
		var err error
		for range 100 {
			// EBUSY until the exited process has left the cgroup.
			if err = os.Remove(full); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove cgroup %s: %v", full, err)
		}
	}
}

const pyNobody = `
import ctypes, os, socket, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
# setuid made us undumpable, which hides /proc/PID/fd even from uid 65534.
ctypes.CDLL(None).prctl(4, 1)  # PR_SET_DUMPABLE
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`

// TestWithoutPrivileges runs the resolver as uid 65534 without
// capabilities (TestUnprivilegedHelper, in a child process): the socket
// of a root process has no owner, the socket of a process of its own user
// has one, one warning says why, and nothing fails.
func TestWithoutPrivileges(t *testing.T) {
	py := python(t)
	ns := netnstest.New(t)
	rootLn := start(t, ns.Command(py, "-c", pyListen))
	rootPort := atoi(t, rootLn.line())
	nobodyLn := start(t, ns.Command(py, "-c", pyNobody))
	nobodyPort := atoi(t, nobodyLn.line())

	helper := ns.Command(os.Args[0], "-test.run", "^TestUnprivilegedHelper$", "-test.v")
	helper.Env = append(os.Environ(), "CONNLOGD_ATTRIBUTION_HELPER=1")
	out, err := helper.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	owners := map[int]int{}
	var warnings []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "helper-listener":
			owners[atoi(t, f[1])] = atoi(t, f[2])
		case len(f) > 0 && f[0] == "helper-warning":
			warnings = append(warnings, line)
		}
	}
	if got, ok := owners[rootPort]; !ok || got != 0 {
		t.Errorf("root's listener: owner %d (seen %v); want none", got, ok)
	}
	if got := owners[nobodyPort]; got != nobodyLn.pid {
		t.Errorf("uid 65534's listener: owner %d; want %d", got, nobodyLn.pid)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE") {
		t.Errorf("warnings %q; want one naming the capabilities", warnings)
	}
	if t.Failed() {
		t.Logf("helper output:\n%s", out)
	}
}

// TestUnprivilegedHelper is TestWithoutPrivileges's other half: it drops
// to uid 65534, attributes the namespace's listeners twice, and prints
// what it found and the warnings.
func TestUnprivilegedHelper(t *testing.T) {
	if os.Getenv("CONNLOGD_ATTRIBUTION_HELPER") != "1" {
		t.Skip("run by TestWithoutPrivileges")
	}
	if err := syscall.Setgroups(nil); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setresgid(65534, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setresuid(65534, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	conn, err := diag.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := New(config.Attribution{Process: true, CmdlineMaxBytes: 1})
	defer r.Close()
	tr := r.NewTracker()
	var tab snapshot.Table
	for range 2 {
		if err := conn.Dump(&tab, allRequests); err != nil {
			t.Fatal(err)
		}
		tr.Refresh(&tab)
	}
	for _, s := range tab.Sockets {
		if s.State != snapshot.StateListen {
			continue
		}
		evs := []event.Event{{Kind: event.Appeared, Socket: s}}
		tr.Annotate(evs)
		pid := 0
		if evs[0].Process != nil {
			pid = evs[0].Process.PID
		}
		fmt.Printf("helper-listener %d %d\n", s.Src.Port(), pid)
	}
	for _, w := range r.Warnings() {
		fmt.Printf("helper-warning %v\n", w)
	}
}
