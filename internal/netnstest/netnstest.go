//go:build linux

// Package netnstest gives each test its own network namespace, and so its
// own socket table, through `ip netns add`. It needs root; without it the
// tests skip, unless CONNLOGD_REQUIRE_NETNS=1 (set by CI) makes that a
// failure, so the integration tests cannot silently not run.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

var counter atomic.Int64

// NS is a named network namespace that is deleted when the test ends.
type NS struct {
	Name string
	Path string
}

// Require skips (or, under CI, fails) a test that cannot create network
// namespaces here.
func Require(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to create network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs the ip command (iproute2)"
	}
	if why != "" {
		Missing(t, why)
	}
}

// Missing skips a test that lacks what it needs (why says what), or
// fails it where the integration tests must run: under
// CONNLOGD_REQUIRE_NETNS=1, as CI sets, so that they cannot silently not
// run there.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// New creates a namespace with loopback up, and deletes it at cleanup.
func New(t testing.TB) *NS {
	t.Helper()
	Require(t)
	return create(t, nil)
}

// NewWithChildEhash is New for a namespace with its own TCP established
// hash of entries buckets (its TIME_WAIT table then holds entries/2
// sockets). The kernel sizes a new namespace's hash from
// net.ipv4.tcp_child_ehash_entries of the namespace that creates it, so a
// scratch parent namespace sets it and creates this one: the host's
// setting, which namespaces other tests create meanwhile read, is never
// touched.
func NewWithChildEhash(t testing.TB, entries int) *NS {
	t.Helper()
	Require(t)
	if _, err := exec.LookPath("nsenter"); err != nil {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatal("needs nsenter (util-linux) for a namespace with its own TCP hash")
		}
		t.Skip("needs nsenter (util-linux) for a namespace with its own TCP hash")
	}
	parent := create(t, nil)
	parent.Sysctl(t, "net.ipv4.tcp_child_ehash_entries", strconv.Itoa(entries))
	// nsenter --net enters the network namespace only: `ip netns add` then
	// makes its bind mount in our mount namespace, where New's are.
	ns := create(t, func(name string) *exec.Cmd {
		return exec.Command("nsenter", "--net="+parent.Path, "ip", "netns", "add", name)
	})
	var got []byte
	err := ns.Do(func() (err error) {
		got, err = os.ReadFile("/proc/sys/net/ipv4/tcp_ehash_entries")
		return err
	})
	if err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(entries) {
		t.Fatalf("%s has tcp_ehash_entries %q (%v), want its own %d", ns.Name, strings.TrimSpace(string(got)), err, entries)
	}
	// The child keeps its hash; the parent is no longer needed.
	if out, err := exec.Command("ip", "netns", "del", parent.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", parent.Name, err, out)
	}
	return ns
}

// create adds a namespace (with add, or `ip netns add` when add is nil),
// brings its loopback up, and deletes it at cleanup.
func create(t testing.TB, add func(name string) *exec.Cmd) *NS {
	t.Helper()
	name := fmt.Sprintf("connlogd-test-%d-%d", os.Getpid(), counter.Add(1))
	cmd := exec.Command("ip", "netns", "add", name)
	if add != nil {
		cmd = add(name)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, Path: "/run/netns/" + name}
	t.Cleanup(func() {
		if _, err := os.Stat(ns.Path); os.IsNotExist(err) {
			return // deleted already
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up in %s: %v: %s", name, err, out)
	}
	return ns
}

// Do runs fn on an OS thread that has entered the namespace. Sockets that
// fn creates belong to the namespace for their whole life, whichever
// thread uses them later.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// A fresh goroutine: if restoring the namespace fails, the thread
		// stays locked and the runtime discards it when the goroutine ends.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(n.Path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Sysctl sets a per-namespace sysctl (a net.* key) inside the namespace,
// failing the test on error. It goes with the namespace: nothing to
// restore, and no other test sees it.
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	// /proc/sys/net shows the namespace of the thread that opens it.
	if err := n.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", key, value, n.Name, err)
	}
}

// Command returns a command that runs inside the namespace.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its output, failing
// the test on error.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out)
}

// CloseTCP4 opens and closes n TCP/IPv4 sockets inside the namespace,
// failing the test on error. Every TCP socket's destroy, connected or
// not, is announced to the namespace's sock_diag destroy subscribers:
// a way to make notifications, and to flood a small receive buffer.
func (n *NS) CloseTCP4(t testing.TB, count int) {
	t.Helper()
	if err := n.Do(func() error {
		for range count {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			unix.Close(fd)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
