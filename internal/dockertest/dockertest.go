//go:build linux

// Package dockertest runs a docker daemon of the test's own: its own data
// root, exec root and socket, no bridge and no iptables rules, so it
// touches nothing of the host's and no other daemon on the machine. Its
// images are built FROM scratch from local files (a static busybox):
// nothing is pulled.
package dockertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/proctest"
	"github.com/connlogd/connlogd/internal/testlock"
)

// Daemon is a running dockerd.
type Daemon struct {
	Sock string // the API socket
	dir  string
	proc *proctest.Daemon
}

// Require skips (or, with CONNLOGD_REQUIRE_NETNS=1 as in CI, fails) a
// test that cannot run a docker daemon here.
func Require(t testing.TB) {
	t.Helper()
	proctest.Require(t, "dockerd",
		proctest.Need{Cmds: []string{"dockerd"}, Why: "needs dockerd (Debian's docker.io)"},
		proctest.Need{Cmds: []string{"docker"}, Why: "needs the docker command (Debian's docker.io)"})
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
	proctest.RemoveIfNew(t, "/run/containerd", "/run/containerd/s", "/run/docker", "/run/docker/plugins")
	d := &Daemon{}
	d.proc = proctest.Start(t, "cldk", func(dir string) (*exec.Cmd, error) {
		d.Sock, d.dir = filepath.Join(dir, "docker.sock"), dir
		return exec.Command("dockerd",
			"--iptables=false", "--bridge=none",
			"--data-root", filepath.Join(dir, "data"),
			"--exec-root", filepath.Join(dir, "exec"),
			"--host", "unix://"+d.Sock,
			"--pidfile", filepath.Join(dir, "pid"),
			// Its own namespace in containerd too, should it share one.
			"--containerd-namespace", "connlogd-test-"+filepath.Base(dir),
			"--containerd-plugins-namespace", "connlogd-test-plugins-"+filepath.Base(dir),
		), nil
	})
	t.Cleanup(func() { d.stop(t) })
	d.proc.WaitReady(t, "dockerd", 90*time.Second, func() error {
		_, err := d.try("version", "--format", "{{.Server.Version}}")
		return err
	}, "dockerd did not answer in 90 s")
	return d
}

// stop removes the daemon's containers, then stops it (it unmounts its
// layers as it stops; proctest detaches whatever it left).
func (d *Daemon) stop(t testing.TB) {
	if ids, err := d.try("ps", "-aq"); err == nil && strings.TrimSpace(ids) != "" {
		d.try(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	d.proc.Stop(t)
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
