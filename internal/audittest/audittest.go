//go:build linux

// Package audittest holds what the tests of audit attribution share, in
// the audit package and in the daemon's: the kernel's audit state, which
// a test must leave as it found it and which only one test at a time may
// change; and processes that live less than a poll interval, clients
// and servers whose connections' owners the test knows, with the bar
// their closed events must meet.
package audittest

import (
	"bufio"
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
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/internal/testlock"
)

// Lock holds the audit lock until t's cleanup: the rules and the enabled
// flag are the kernel's, so one test at a time, in any package.
func Lock(t testing.TB) {
	t.Helper()
	testlock.Exclusive(t, "audit")
}

// KeepState takes the audit lock, reads the kernel's audit state with
// read, and at t's end reads it again: if same says it changed, the test
// fails and restore puts back what it can of before, so that the next
// test starts clean. It returns the state before.
func KeepState[S any](t testing.TB, read func() S, same func(before, after S) bool, restore func(before S)) S {
	t.Helper()
	Lock(t)
	before := read()
	t.Cleanup(func() {
		if after := read(); !same(before, after) {
			t.Errorf("audit state not restored:\nbefore:\n%v\nafter:\n%v", before, after)
			restore(before)
		}
	})
	return before
}

// Gap separates the short-lived processes of one test. Calls of one uid
// to one server are told apart by when they were made and whether their
// process still holds its socket: a client starting before the reader
// has read the last one's close (a few ms; more on a machine with many
// more runnable threads than cores) ties with it, and ties get no owner.
// Back-to-back clients are the benchmarks'.
const Gap = 200 * time.Millisecond

// Count is how many short-lived processes a test runs.
const Count = 30

// Clients runs Count bash processes in ns, one after another, each
// connecting to a server of its own, sending its pid, waiting 50 ms and
// closing. It returns each client socket's local port → pid, and the
// path of bash.
//
// A client that could not connect made no connection, so it is run
// again (up to 3 times) rather than taken for one; and the server must
// have heard each client before the next starts, so that a lost client
// is named, and two clients can never share a port (one key) unnoticed.
func Clients(t testing.TB, ns *netnstest.NS) (map[uint16]int, string) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		netnstest.Missing(t, "needs bash")
	}
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	pids := map[uint16]int{}
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
					pids[netip.MustParseAddrPort(c.RemoteAddr().String()).Port()] = pid
				} else {
					unread = append(unread, fmt.Sprintf("%s sent %q", c.RemoteAddr(), line))
				}
			}()
		}
	}()
	// The script exits 0 only when it connected and sent its pid.
	script := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d || exit 3; echo $$ >&3 || exit 4; read -t 0.05 <&3; exec 3>&-; exit 0", port)
	heard := func() int { mu.Lock(); defer mu.Unlock(); return len(pids) }
	var longest time.Duration
	for i := range Count {
		if i > 0 {
			time.Sleep(Gap)
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

// Servers runs Count server processes in ns, one after another, each made
// by newServer: it accepts one connection on the listener it inherits as
// descriptor 3, reads a line, answers with its pid as a line, and exits.
// It returns each connection's client port → server pid.
func Servers(t testing.TB, ns *netnstest.NS, newServer func() *exec.Cmd) map[uint16]int {
	t.Helper()
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
	want := map[uint16]int{}
	var longest time.Duration
	for range Count {
		cmd := newServer()
		cmd.ExtraFiles = []*os.File{lf}
		cmd.Stderr = os.Stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var c net.Conn
		if err := ns.Do(func() (err error) { c, err = net.Dial("tcp4", ln.Addr().String()); return }); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
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
		want[netip.MustParseAddrPort(c.LocalAddr().String()).Port()] = cmd.Process.Pid
	}
	t.Logf("longest server life, ip netns exec included: %v", longest)
	return want
}

// MaxUnowned is how many closed events of Count may carry no owner: the
// issue's bar, at most one of 30.
//
// It holds on a loaded machine too (other packages' tests beside these):
// the daemon's loop may then be held up for seconds (a scan of /proc),
// but closes are stamped when the kernel's notification is read, not
// when the loop gets to them, and the calls they may claim are kept
// until it has. A wrong owner is never allowed.
const MaxUnowned = 1

// Owner is what a closed event says of the process that made its socket.
type Owner struct {
	PID  int    // 0: none
	Exe  string // "": not named
	Desc string // the event, for the test's log
}

// CheckOwners applies the bar to the closed events of the sockets in
// want (port → pid of the process that made it), got holding what each
// one's event named (nil: no closed event): none names another process,
// and at most MaxUnowned name none. The right process without its
// executable (found after it exited, when /proc no longer names it) is
// not the whole owner, and not a wrong one. exe is the path the
// processes ran; audit names the executable with links resolved. It
// returns how many named their whole owner.
func CheckOwners(t testing.TB, got map[uint16]*Owner, want map[uint16]int, exe string) int {
	t.Helper()
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	right := 0
	for port, pid := range want {
		o := got[port]
		switch {
		case o == nil:
			t.Errorf("port %d: no closed event", port)
		case o.PID == 0:
			t.Logf("port %d: no owner: %s", port, o.Desc)
		case o.PID == pid && o.Exe == "":
			t.Logf("port %d: owner without its exe: %s", port, o.Desc)
		case o.PID != pid || o.Exe != exe:
			t.Errorf("port %d: WRONG owner %s, made by pid %d (%s)", port, o.Desc, pid, exe)
		default:
			right++
		}
	}
	t.Logf("%d of %d closed events carry the process that made them", right, len(want))
	if right < len(want)-MaxUnowned {
		t.Errorf("only %d of %d closed events carry their process", right, len(want))
	}
	return right
}
