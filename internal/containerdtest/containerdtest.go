//go:build linux

// Package containerdtest runs a containerd of the test's own with its CRI
// plugin on: its own root, state directory and socket, so it touches no
// other containerd on the machine. Nothing is pulled: the pod sandbox
// (pause) image and the containers' image are one OCI image the package
// builds from a static busybox and imports with ctr.
//
// Pods use the host's network namespace (NamespaceMode NODE): a pod with
// its own needs a CNI network that gives it an eth0 with an address. With
// only the loopback plugin (Debian's containernetworking-plugins)
// containerd 1.6 fails RunPodSandbox with "failed to setup network for
// sandbox: failed to find network info for sandbox", and the plugins that
// do give an address put a bridge, a veth or a device on the host.
package containerdtest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/connlogd/connlogd/internal/proctest"
	"github.com/connlogd/connlogd/internal/testlock"
)

// Image is the reference of the busybox image every daemon has: the
// sandbox image, and the image of the containers the tests run (their
// command says what busybox runs).
const Image = "docker.io/connlogd-test/busybox:1"

// Daemon is a running containerd.
type Daemon struct {
	Sock    string // containerd's API socket, which serves the CRI
	Runtime runtimeapi.RuntimeServiceClient
	dir     string
	proc    *proctest.Daemon
	conn    *grpc.ClientConn
	pods    []string
	cgroups []string // made for the pods, to remove at the end
}

// Require skips (or, with CONNLOGD_REQUIRE_NETNS=1 as in CI, fails) a
// test that cannot run containerd here.
func Require(t testing.TB) {
	t.Helper()
	proctest.Require(t, "containerd",
		proctest.Need{Cmds: []string{"containerd", "ctr", "containerd-shim-runc-v2"},
			Why: "needs containerd, ctr and containerd-shim-runc-v2 (Debian's containerd)"},
		proctest.Need{Cmds: []string{"runc"}, Why: "needs runc (Debian's runc)"})
}

// config is containerd 1.6's configuration (version 2) for the test's
// daemon: its own paths, the CRI plugin with the local image as the
// sandbox image, and no plugin that writes outside them.
const config = `version = 2
root = "{{dir}}/root"
state = "{{dir}}/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]
[grpc]
  address = "{{dir}}/c.sock"
[ttrpc]
  address = "{{dir}}/c.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + Image + `"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # The sandbox's oom_score_adj is -998: lowering it needs
  # CAP_SYS_RESOURCE, which a machine that is itself a container may not
  # give (runc's init then dies with "can't get final child's PID").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{{dir}}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{dir}}/cni/bin"
    conf_dir = "{{dir}}/cni/conf"
`

// Start runs a containerd for the test and stops it, with its pods, at
// cleanup.
func Start(t testing.TB) *Daemon {
	t.Helper()
	Require(t)
	// containerd's shims put their sockets in /run/containerd/s whatever
	// the daemon's state directory, as docker's containerd does, and the
	// docker tests remove that directory at their end: one at a time.
	testlock.Exclusive(t, "dockerd")
	proctest.RemoveIfNew(t, "/run/containerd", "/run/containerd/s")
	d := &Daemon{}
	d.proc = proctest.Start(t, "clct", func(dir string) (*exec.Cmd, error) {
		d.Sock, d.dir = filepath.Join(dir, "c.sock"), dir
		cfg := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(config, "{{dir}}", dir)), 0o600); err != nil {
			return nil, err
		}
		return exec.Command("containerd", "--config", cfg), nil
	})
	t.Cleanup(func() { d.stop(t) })
	var err error
	d.conn, err = grpc.NewClient("unix://"+d.Sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	d.Runtime = runtimeapi.NewRuntimeServiceClient(d.conn)
	d.proc.WaitReady(t, "containerd", 90*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := d.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
		return err
	}, "containerd's CRI did not answer in 90 s")
	d.importImage(t)
	return d
}

// Log is what containerd wrote so far.
func (d *Daemon) Log() string { return d.proc.Log.String() }

func (d *Daemon) stop(t testing.TB) {
	// The pods first: their shims outlive containerd otherwise.
	for _, p := range d.pods {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if _, err := d.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p}); err != nil {
			t.Logf("stopping pod %s: %v", p, err)
		}
		if _, err := d.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p}); err != nil {
			t.Logf("removing pod %s: %v", p, err)
		}
		cancel()
	}
	if d.conn != nil {
		d.conn.Close()
	}
	// containerd leaves its snapshots' overlay mounts and the sandboxes'
	// /dev/shm mounts behind: proctest detaches them.
	d.proc.Stop(t)
	// runc removes a container's cgroup, not the parents it made for it.
	for i := len(d.cgroups) - 1; i >= 0; i-- {
		if err := os.Remove(d.cgroups[i]); err != nil && !os.IsNotExist(err) {
			t.Logf("removing cgroup %s: %v", d.cgroups[i], err)
		}
	}
}

// cgroupMounts returns where cgroup hierarchies (v1 and v2) are mounted.
func cgroupMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fs, pf := strings.Fields(post), strings.Fields(pre)
		if ok && len(fs) > 0 && (fs[0] == "cgroup" || fs[0] == "cgroup2") && len(pf) > 4 {
			out = append(out, pf[4])
		}
	}
	return out
}

// noteCgroups records, parents first, the directories of cgroup path
// that do not exist yet in any hierarchy: runc will make them.
func (d *Daemon) noteCgroups(path string) {
	for _, m := range cgroupMounts() {
		dir := m
		for _, c := range strings.Split(strings.Trim(path, "/"), "/") {
			dir = filepath.Join(dir, c)
			if _, err := os.Stat(dir); os.IsNotExist(err) {
				d.cgroups = append(d.cgroups, dir)
			}
		}
	}
}

// importImage builds the busybox image as an OCI archive and imports it
// into the namespace the CRI plugin uses (k8s.io).
func (d *Daemon) importImage(t testing.TB) {
	t.Helper()
	archive := filepath.Join(d.dir, "image.tar")
	if err := writeImage(archive); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", "--address", d.Sock, "--namespace", "k8s.io", "images", "import", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images import: %v: %s", err, out)
	}
	// The CRI plugin learns of the image from containerd's events: wait
	// until it has it.
	images := runtimeapi.NewImageServiceClient(d.conn)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		st, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: Image}})
		if err == nil && st.GetImage() != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CRI plugin does not know the imported image: %v", err)
		}
	}
}

// writeImage writes an OCI image archive of one layer holding the static
// busybox as /bin/busybox, with busybox as the entry point and
// "sleep 2147483647" as its command: the sandbox's pause.
func writeImage(path string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	for _, h := range []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
		{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
	} {
		h.ModTime = time.Unix(0, 0)
		if err := lw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := lw.Write(bin); err != nil {
				return err
			}
		}
	}
	if err := lw.Close(); err != nil {
		return err
	}
	type descriptor struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	blobs := map[string][]byte{}
	blob := func(mediaType string, b []byte) descriptor {
		sum := sha256.Sum256(b)
		dg := "sha256:" + hex.EncodeToString(sum[:])
		blobs[dg] = b
		return descriptor{MediaType: mediaType, Digest: dg, Size: len(b)}
	}
	layerDesc := blob("application/vnd.oci.image.layer.v1.tar", layer.Bytes())
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": []string{"/bin/busybox"},
			"Cmd":        []string{"sleep", "2147483647"},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        blob("application/vnd.oci.image.config.v1+json", cfg),
		"layers":        []descriptor{layerDesc},
	})
	if err != nil {
		return err
	}
	md := blob("application/vnd.oci.image.manifest.v1+json", manifest)
	md.Annotations = map[string]string{"io.containerd.image.name": Image, "org.opencontainers.image.ref.name": "1"}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []descriptor{md}})
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := tar.NewWriter(f)
	add := func(name string, b []byte) error {
		if err := w.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := w.Write(b)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := add("index.json", index); err != nil {
		return err
	}
	for dg, b := range blobs {
		if err := add("blobs/sha256/"+strings.TrimPrefix(dg, "sha256:"), b); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}

// Pod describes a pod sandbox to run.
type Pod struct {
	Name, Namespace, UID string
}

// RunPod runs a pod sandbox in the host's network namespace, in the
// cgroup the kubelet's cgroupfs driver would give a best-effort pod, and
// returns its id; it is stopped and removed at cleanup.
func (d *Daemon) RunPod(t testing.TB, p Pod) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: p.Name, Namespace: p.Namespace, Uid: p.UID},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/besteffort/pod" + p.UID,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	d.noteCgroups(cfg.Linux.CgroupParent)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := d.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\ncontainerd's log:\n%s", err, d.proc.Log)
	}
	d.pods = append(d.pods, r.GetPodSandboxId())
	return r.GetPodSandboxId(), cfg
}

// RunContainer creates and starts, in pod, a container named name of the
// busybox image running args, with labels (none, or the kubelet's), and
// returns its id.
func (d *Daemon) RunContainer(t testing.TB, pod string, podCfg *runtimeapi.PodSandboxConfig, name string, labels map[string]string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := d.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image:    &runtimeapi.ImageSpec{Image: Image},
			Command:  []string{"/bin/busybox"},
			Args:     args,
			Labels:   labels,
		},
		SandboxConfig: podCfg,
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v\ncontainerd's log:\n%s", err, d.proc.Log)
	}
	if _, err := d.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.GetContainerId()}); err != nil {
		t.Fatalf("StartContainer: %v\ncontainerd's log:\n%s", err, d.proc.Log)
	}
	return c.GetContainerId()
}

// FreePort returns a TCP port nothing listens on on the host's loopback
// now: pods share the host's network namespace.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// String names the daemon in messages.
func (d *Daemon) String() string { return fmt.Sprintf("containerd at %s", d.Sock) }
