//go:build linux

// Package dockertest runs a docker daemon of the test's own: its own data
// root, exec root and socket, no bridge and no iptables rules, so it
// touches nothing of the host's and no other daemon on the machine. Its
// images are built FROM scratch from local files (a static busybox):
// nothing is pulled.
package dockertest

import (
	"github.com/connlogd/connlogd/internal/testlock"

	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Daemon is a running dockerd.
type Daemon struct {
	Sock string // the API socket
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// Require skips (or, with CONNLOGD_REQUIRE_NETNS=1 as in CI, fails) a
// test that cannot run a docker daemon here.
func Require(t testing.TB) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "needs root to run dockerd"
	case !found("dockerd"):
		why = "needs dockerd (Debian's docker.io)"
	case !found("docker"):
		why = "needs the docker command (Debian's docker.io)"
	case !staticBusybox():
		why = "needs a static busybox on PATH for the image (Debian's busybox-static)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func found(cmd string) bool { _, err := exec.LookPath(cmd); return err == nil }

// staticBusybox reports whether the busybox on PATH is statically linked:
// an image FROM scratch has no dynamic loader.
func staticBusybox() bool {
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

// Start runs a daemon for the test and stops it, with its containers, at
// cleanup.
func Start(t testing.TB) *Daemon {
	t.Helper()
	Require(t)
	// Every dockerd shares /run/docker and /run/containerd, which each
	// test removes at its end: one daemon at a time, in any package.
	testlock.Exclusive(t, "dockerd")
	// dockerd and containerd's shims make these whatever their roots; the
	// ones this daemon brings into being are removed, if empty, at cleanup
	// (cleanups run last first: parents are listed first).
	for _, d := range []string{"/run/containerd", "/run/containerd/s", "/run/docker", "/run/docker/plugins"} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			t.Cleanup(func() { os.Remove(d) })
		}
	}
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "cldk")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Sock: filepath.Join(dir, "docker.sock"), dir: dir, done: make(chan struct{}), log: &bytes.Buffer{}}
	d.cmd = exec.Command("dockerd",
		"--iptables=false", "--bridge=none",
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--host", "unix://"+d.Sock,
		"--pidfile", filepath.Join(dir, "pid"),
		// Its own namespace in containerd too, should it share one.
		"--containerd-namespace", "connlogd-test-"+filepath.Base(dir),
		"--containerd-plugins-namespace", "connlogd-test-plugins-"+filepath.Base(dir),
	)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := d.try("version", "--format", "{{.Server.Version}}"); err == nil {
			break
		}
		select {
		case <-d.done:
			t.Fatalf("dockerd exited: %s", d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not answer in 90 s: %s", d.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

func (d *Daemon) stop(t testing.TB) {
	if ids, err := d.try("ps", "-aq"); err == nil && strings.TrimSpace(ids) != "" {
		d.try(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	// dockerd unmounts its layers when it stops; whatever it left is
	// detached before the directory goes.
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		var mounts []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) > 4 && strings.HasPrefix(fs[4], d.dir+"/") {
				mounts = append(mounts, fs[4])
			}
		}
		f.Close()
		for i := len(mounts) - 1; i >= 0; i-- {
			syscall.Unmount(mounts[i], syscall.MNT_DETACH)
		}
	}
	if err := os.RemoveAll(d.dir); err != nil {
		t.Logf("removing the daemon's directory: %v", err)
	}
}

func (d *Daemon) try(args ...string) (string, error) {
	cmd := exec.Command("docker", append([]string{"-H", "unix://" + d.Sock}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+filepath.Join(d.dir, "cli"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Docker runs the docker command against the daemon and returns its
// output; a failure fails the test.
func (d *Daemon) Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.try(args...)
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// BusyboxImage builds, FROM scratch, an image of the static busybox
// found on PATH, whose entry point is busybox: `docker run IMAGE sh -c
// ...` runs its shell. It returns the image's reference.
func (d *Daemon) BusyboxImage(t testing.TB) string {
	t.Helper()
	const ref = "connlogd-test/busybox:1"
	ctx := filepath.Join(d.dir, "build")
	if err := os.MkdirAll(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Docker(t, "build", "-q", "-t", ref, ctx)
	return ref
}
