//go:build linux

// Package proctest runs the outside programs the integration tests start
// themselves (dockerd, containerd, the syslog receivers): the check that
// the machine has what one needs, a daemon of the test's own in a
// temporary directory, waiting until it answers, and stopping it without
// leaving its mounts or files behind. What is particular to a program
// (its flags, how to ask whether it is up, what it leaves elsewhere)
// stays with the harness of that program.
package proctest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
)

// Need is what a daemon needs on PATH: every one of Cmds, or the test
// cannot run (Why says so, and what to install).
type Need struct {
	Cmds []string
	Why  string
}

// Require skips (or, with CONNLOGD_REQUIRE_NETNS=1 as in CI, fails) a
// test that cannot run daemon here: it needs root, the commands of needs
// (checked in order) and a static busybox on PATH for the test's image.
func Require(t testing.TB, daemon string, needs ...Need) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to run " + daemon
	}
	for _, n := range needs {
		for _, c := range n.Cmds {
			if why == "" && !Found(c) {
				why = n.Why
			}
		}
	}
	if why == "" && !StaticBusybox() {
		why = "needs a static busybox on PATH for the image (Debian's busybox-static)"
	}
	if why != "" {
		netnstest.Missing(t, why)
	}
}

// Found reports whether cmd is on PATH.
func Found(cmd string) bool { _, err := exec.LookPath(cmd); return err == nil }

// StaticBusybox reports whether the busybox on PATH is statically linked:
// an image FROM scratch has no dynamic loader.
func StaticBusybox() bool {
	p, err := exec.LookPath("busybox")
	if err != nil {
		return false
	}
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// RemoveIfNew removes, at cleanup, those of dirs that do not exist now
// and are empty then: the directories a daemon makes outside its own
// whatever its flags (/run/containerd). List parents first: cleanups run
// last first.
func RemoveIfNew(t testing.TB, dirs ...string) {
	for _, d := range dirs {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			t.Cleanup(func() { os.Remove(d) })
		}
	}
}

// Daemon is a process of the test's own with its own directory.
type Daemon struct {
	Dir  string        // its own directory, removed by Stop
	Log  *bytes.Buffer // what it wrote, stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
}

// Start makes a temporary directory whose name begins with prefix, short
// because unix socket paths are limited to 108 bytes, and runs the
// command that command makes for it (command may write its files there
// first). The daemon gets SIGTERM if the test process dies. The caller
// stops it, with Stop, at cleanup.
func Start(t testing.TB, prefix string, command func(dir string) (*exec.Cmd, error)) *Daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Dir: dir, Log: &bytes.Buffer{}, done: make(chan struct{})}
	d.cmd, err = command(dir)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = d.Log, d.Log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	return d
}

// WaitReady polls ready until it succeeds. It fails the test, with the
// daemon's log, if the daemon (called name) exits first, or if ready
// has not succeeded within timeout (notReady says what did not happen).
func (d *Daemon) WaitReady(t testing.TB, name string, timeout time.Duration, ready func() error, notReady string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("%s exited: %s", name, d.Log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v\n%s", notReady, err, d.Log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends the daemon (Terminate, with a minute's grace), detaches
// whatever it left mounted under its directory and removes the
// directory.
func (d *Daemon) Stop(t testing.TB) {
	Terminate(d.cmd.Process, d.done, 60*time.Second)
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		var mounts []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) > 4 && strings.HasPrefix(fs[4], d.Dir+"/") {
				mounts = append(mounts, fs[4])
			}
		}
		f.Close()
		// Inner mounts last in mountinfo: detached first.
		for i := len(mounts) - 1; i >= 0; i-- {
			syscall.Unmount(mounts[i], syscall.MNT_DETACH)
		}
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Logf("removing the daemon's directory: %v", err)
	}
}

// Terminate sends p SIGTERM, as systemd does, and waits until exited is
// closed; after grace it kills p and waits again.
func Terminate(p *os.Process, exited <-chan struct{}, grace time.Duration) {
	p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		p.Kill()
		<-exited
	}
}
