//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
)

// attrPython returns the real python3 interpreter (not a pyenv shim).
func attrPython(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err == nil {
		var out []byte
		if out, err = exec.Command(p, "-c", "import sys; print(sys.executable)").Output(); err == nil {
			return strings.TrimSpace(string(out))
		}
	}
	if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
		t.Fatalf("python3: %v", err)
	}
	t.Skipf("needs python3: %v", err)
	return ""
}

// attrProc is a python3 process talking line by line.
type attrProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	pid   int
}

func attrStart(t *testing.T, cmd *exec.Cmd) *attrProc {
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
	p := &attrProc{t: t, cmd: cmd, in: in, lines: make(chan string, 16), pid: cmd.Process.Pid}
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

func (p *attrProc) stop() {
	p.in.Close()
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

func (p *attrProc) line() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if ok {
			return l
		}
		p.t.Fatalf("pid %d exited before printing a line", p.pid)
	case <-time.After(20 * time.Second):
		p.t.Fatalf("pid %d printed nothing for 20s", p.pid)
	}
	return ""
}

func (p *attrProc) expect(want string) {
	p.t.Helper()
	if l := p.line(); l != want {
		p.t.Fatalf("pid %d printed %q; want %q", p.pid, l, want)
	}
}

func (p *attrProc) send(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, s+"\n"); err != nil {
		p.t.Fatal(err)
	}
}

const attrPyServer = `
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

const attrPyClient = `
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(c.getsockname()[1], flush=True)
sys.stdin.readline()
c.close()
print("closed", flush=True)
sys.stdin.read()
`

// byPorts returns the first event of kind with local port src and remote
// port dst.
func byPorts(evs []ev, kind string, src, dst int) ev {
	for _, e := range match(evs, kind, "tcp", src) {
		if int(e.num("dst_port")) == dst {
			return e
		}
	}
	return nil
}

// TestAttribution: a python3 server and client in the daemon's namespace.
// The listener's appeared event names the server's pid, comm and user;
// the client's socket is outbound, the accepted one inbound, the listener
// listen; and the client's closed event still names the client after it
// closed the socket and exited. On the harness's quick poll, and on the
// default interval.
func TestAttribution(t *testing.T) {
	eachInterval(t, testAttribution)
}

func testAttribution(t *testing.T, cfg string) {
	py := attrPython(t)
	ns := netnstest.New(t)
	d := startCase(t, ns, cfg+"attribution:\n  cmdline: true\n")
	srv := attrStart(t, ns.Command(py, "-c", attrPyServer))
	port, err := strconv.Atoi(srv.line())
	if err != nil {
		t.Fatal(err)
	}
	cli := attrStart(t, ns.Command(py, "-c", attrPyClient, strconv.Itoa(port)))
	cport, err := strconv.Atoi(cli.line())
	if err != nil {
		t.Fatal(err)
	}
	srv.expect("accepted")

	evs := d.waitFor("the three sockets appeared", 10*time.Second, func(evs []ev) bool {
		return byPorts(evs, "appeared", port, 0) != nil && byPorts(evs, "appeared", port, cport) != nil && byPorts(evs, "appeared", cport, port) != nil
	})
	wantUser := strconv.Itoa(os.Geteuid())
	if u, err := user.LookupId(wantUser); err == nil {
		wantUser = u.Username
	}
	comm := func(pid int) string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	srvComm, cliComm := comm(srv.pid), comm(cli.pid)
	for _, c := range []struct {
		what      string
		e         ev
		pid       int
		comm, dir string
	}{
		{"listener", byPorts(evs, "appeared", port, 0), srv.pid, srvComm, "listen"},
		{"accepted", byPorts(evs, "appeared", port, cport), srv.pid, srvComm, "inbound"},
		{"client", byPorts(evs, "appeared", cport, port), cli.pid, cliComm, "outbound"},
	} {
		if int(c.e.num("pid")) != c.pid || c.e.str("comm") != c.comm || c.e.str("user") != wantUser || c.e.str("direction") != c.dir {
			t.Errorf("%s: %s\nwant pid %d, comm %q, user %q, direction %q", c.what, mustJSON(c.e), c.pid, c.comm, wantUser, c.dir)
		}
		if !strings.HasPrefix(c.e.str("cmdline"), py+" -c ") {
			t.Errorf("%s: cmdline %q; want %q…", c.what, c.e.str("cmdline"), py+" -c ")
		}
	}

	// The client closes, the server answers by closing, the client exits.
	cli.send("close")
	cli.expect("closed")
	srv.expect("eof")
	cli.stop()
	evs = d.waitFor("the client's close", 10*time.Second, func(evs []ev) bool {
		return byPorts(evs, "closed", cport, port) != nil
	})
	closed := byPorts(evs, "closed", cport, port)
	if int(closed.num("pid")) != cli.pid || closed.str("comm") != cliComm || closed.str("direction") != "outbound" {
		t.Errorf("client's closed event: %s\nwant pid %d, comm %q, direction outbound", mustJSON(closed), cli.pid, cliComm)
	}
}
