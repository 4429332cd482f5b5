package containers

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/connlogd/connlogd/event"
)

// fakeCRI serves the three RuntimeService calls the CRI source makes,
// from maps, as containerd's CRI plugin would answer them.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	mu         sync.Mutex
	containers map[string]*runtimeapi.ContainerStatus
	sandboxOf  map[string]string // container id → its sandbox's id
	sandboxes  map[string]*runtimeapi.PodSandboxStatus
	calls      []string
	// hold, while set, makes every call wait for it to close or for the
	// call's deadline.
	hold chan struct{}
}

func (f *fakeCRI) enter(ctx context.Context, call string) error {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}

func (f *fakeCRI) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	if err := f.enter(ctx, "ContainerStatus "+r.GetContainerId()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.containers[r.GetContainerId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "an error occurred when try to find container %q: not found", r.GetContainerId())
	}
	return &runtimeapi.ContainerStatusResponse{Status: st}, nil
}

func (f *fakeCRI) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	if err := f.enter(ctx, "ListContainers "+r.GetFilter().GetId()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*runtimeapi.Container
	for id, st := range f.containers {
		if want := r.GetFilter().GetId(); want != "" && want != id {
			continue
		}
		out = append(out, &runtimeapi.Container{Id: id, PodSandboxId: f.sandboxOf[id], Metadata: st.GetMetadata()})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}

func (f *fakeCRI) PodSandboxStatus(ctx context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	if err := f.enter(ctx, "PodSandboxStatus "+r.GetPodSandboxId()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.sandboxes[r.GetPodSandboxId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "an error occurred when try to find sandbox: not found")
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: st}, nil
}

func (f *fakeCRI) setHold(c chan struct{}) {
	f.mu.Lock()
	f.hold = c
	f.mu.Unlock()
}

func (f *fakeCRI) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// serveCRI serves f on a unix socket in a fresh directory; srv nil
// serves a gRPC server with no service at all.
func serveCRI(t *testing.T, f *fakeCRI) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	if f != nil {
		runtimeapi.RegisterRuntimeServiceServer(srv, f)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return sock
}

var (
	ctrID     = strings.Repeat("c", 64)
	bareID    = strings.Repeat("d", 64) // a container without the kubelet's labels
	sandboxID = strings.Repeat("5", 64)
	podUID    = "0b7b3a4e-0000-4000-8000-000000000001"
)

func newFakeCRI() *fakeCRI {
	return &fakeCRI{
		containers: map[string]*runtimeapi.ContainerStatus{
			ctrID: {
				Id:       ctrID,
				Metadata: &runtimeapi.ContainerMetadata{Name: "web", Attempt: 1},
				State:    runtimeapi.ContainerState_CONTAINER_RUNNING,
				Image:    &runtimeapi.ImageSpec{Image: "registry.local/shop/web:1.4"},
				ImageRef: "registry.local/shop/web@sha256:1b2c3d",
				Labels: map[string]string{
					"io.kubernetes.pod.name":       "web-7d4b9",
					"io.kubernetes.pod.namespace":  "shop",
					"io.kubernetes.pod.uid":        podUID,
					"io.kubernetes.container.name": "web",
				},
			},
			bareID: {
				Id:       bareID,
				Metadata: &runtimeapi.ContainerMetadata{Name: "sidecar"},
				Image:    &runtimeapi.ImageSpec{Image: "sha256:99aa", UserSpecifiedImage: "busybox:1.36"},
				ImageRef: "sha256:99aa",
				ImageId:  "sha256:99aa",
			},
		},
		sandboxOf: map[string]string{ctrID: sandboxID, bareID: sandboxID},
		sandboxes: map[string]*runtimeapi.PodSandboxStatus{
			sandboxID: {
				Id:       sandboxID,
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "web-7d4b9", Namespace: "shop", Uid: podUID},
				State:    runtimeapi.PodSandboxState_SANDBOX_READY,
			},
		},
	}
}

func TestCRIInspect(t *testing.T) {
	f := newFakeCRI()
	src := NewCRI(serveCRI(t, f), true)
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The kubelet's labels name the pod: one call.
	c, err := src.Inspect(ctx, ctrID)
	want := event.Container{Name: "web", Image: "registry.local/shop/web:1.4", ImageID: "sha256:1b2c3d",
		PodName: "web-7d4b9", PodNamespace: "shop", PodUID: podUID}
	if err != nil || c != want {
		t.Errorf("labelled container: %+v, %v\nwant %+v", c, err, want)
	}
	if calls := f.callLog(); len(calls) != 1 || calls[0] != "ContainerStatus "+ctrID {
		t.Errorf("calls %v, want one ContainerStatus", calls)
	}

	// Without labels, the pod comes from the container's sandbox; the
	// image as the user wrote it wins over the runtime's id.
	c, err = src.Inspect(ctx, bareID)
	want = event.Container{Name: "sidecar", Image: "busybox:1.36", ImageID: "sha256:99aa",
		PodName: "web-7d4b9", PodNamespace: "shop", PodUID: podUID}
	if err != nil || c != want {
		t.Errorf("container without labels: %+v, %v\nwant %+v", c, err, want)
	}

	// The sandbox's own process: the pod, no container name.
	c, err = src.Inspect(ctx, sandboxID)
	want = event.Container{PodName: "web-7d4b9", PodNamespace: "shop", PodUID: podUID}
	if err != nil || c != want {
		t.Errorf("sandbox: %+v, %v\nwant %+v", c, err, want)
	}

	unknown := strings.Repeat("a", 64)
	if _, err := src.Inspect(ctx, unknown); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}

	// Nothing but a full id is ever sent.
	n := len(f.callLog())
	for _, bad := range []string{"abc", strings.Repeat("C", 64), "../" + ctrID[3:]} {
		if _, err := src.Inspect(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if calls := f.callLog(); len(calls) != n {
		t.Errorf("calls for malformed ids: %v", calls[n:])
	}

	// A sandbox that vanished leaves the container's own answer.
	f.mu.Lock()
	delete(f.sandboxes, sandboxID)
	f.mu.Unlock()
	c, err = src.Inspect(ctx, bareID)
	if err != nil || c != (event.Container{Name: "sidecar", Image: "busybox:1.36", ImageID: "sha256:99aa"}) {
		t.Errorf("container whose sandbox is gone: %+v, %v", c, err)
	}
}

// Replies that break the rules are errors, never values.
func TestCRIMalformedReplies(t *testing.T) {
	f := newFakeCRI()
	noMeta, otherID, big, bad := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64), strings.Repeat("4", 64)
	f.containers[noMeta] = &runtimeapi.ContainerStatus{Id: noMeta}
	f.containers[otherID] = &runtimeapi.ContainerStatus{Id: ctrID, Metadata: &runtimeapi.ContainerMetadata{Name: "x"}}
	f.containers[big] = &runtimeapi.ContainerStatus{Id: big, Metadata: &runtimeapi.ContainerMetadata{Name: "big"},
		Annotations: map[string]string{"a": strings.Repeat("x", maxInspect)}}
	long := strings.Repeat("é", 1000) // 2,000 bytes
	f.containers[bad] = &runtimeapi.ContainerStatus{Id: bad, Metadata: &runtimeapi.ContainerMetadata{Name: long},
		Labels: map[string]string{"io.kubernetes.pod.name": "p", "io.kubernetes.pod.namespace": "n", "io.kubernetes.pod.uid": "u"}}
	src := NewCRI(serveCRI(t, f), true)
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := src.Inspect(ctx, noMeta); err == nil || !strings.Contains(err.Error(), "no status metadata") {
		t.Errorf("no metadata: %v", err)
	}
	if _, err := src.Inspect(ctx, otherID); err == nil || !strings.Contains(err.Error(), "answered for") {
		t.Errorf("reply about another container: %v", err)
	}
	_, err := src.Inspect(ctx, big)
	if status.Code(err) != codes.ResourceExhausted || errors.Is(err, ErrUnreachable) {
		t.Errorf("oversized reply: %v", err)
	}
	c, err := src.Inspect(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Name) > maxField || len(c.Name) < maxField-1 || !strings.HasPrefix(long, c.Name) {
		t.Errorf("name of %d bytes not cut on a rune boundary to %d: %d bytes", len(long), maxField, len(c.Name))
	}
	if c.PodName != "p" || c.PodNamespace != "n" || c.PodUID != "u" {
		t.Errorf("pod fields %+v", c)
	}
	// The connection survives the oversized reply.
	if c, err := src.Inspect(ctx, ctrID); err != nil || c.Name != "web" {
		t.Errorf("after an oversized reply: %+v, %v", c, err)
	}
}

// Something on the socket that does not speak gRPC: an error by the
// deadline, never a hang.
func TestCRIGarbage(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "garbage.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\nnot grpc\x00\xff"))
			c.Close()
		}
	}()
	src := NewCRI(sock, true)
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := src.Inspect(ctx, ctrID); done <- err }()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("garbage answered: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Inspect did not return at its deadline")
	}
}

// No socket, nothing listening, or no CRI behind the socket: the runtime
// is unreachable, which the Namer says once for a configured socket and
// not at all for a default one.
func TestCRIUnreachable(t *testing.T) {
	dir := t.TempDir()
	refused := filepath.Join(dir, "refused.sock")
	ln, err := net.Listen("unix", refused)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody listens
	if _, err := os.Stat(refused); err != nil {
		t.Fatal(err)
	}
	for name, sock := range map[string]string{
		"absent":  filepath.Join(dir, "absent.sock"),
		"refused": refused,
		"no CRI":  serveCRI(t, nil),
	} {
		t.Run(name, func(t *testing.T) {
			src := NewCRI(sock, false)
			defer src.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := src.Inspect(ctx, ctrID); !errors.Is(err, ErrUnreachable) {
				t.Errorf("Inspect: %v, want ErrUnreachable", err)
			}
			for _, explicit := range []bool{false, true} {
				n := New([]Source{NewCRI(sock, explicit)}, Options{})
				for i := range 5 {
					n.Lookup(id(i))
				}
				waitIdle(t, n)
				ws := n.Warnings()
				switch {
				case !explicit && len(ws) != 0:
					t.Errorf("default socket: warnings %v", ws)
				case explicit && (len(ws) != 1 || !strings.Contains(ws[0].Error(), "CRI runtime at "+sock)):
					t.Errorf("configured socket: warnings %v, want one naming it", ws)
				}
				n.Close()
			}
		})
	}
}

// A runtime that hangs: the question times out, the Namer answers nil
// meanwhile, and once the runtime answers a later Lookup has the names.
func TestCRISlowRuntime(t *testing.T) {
	f := newFakeCRI()
	hold := make(chan struct{})
	f.setHold(hold)
	src := NewCRI(serveCRI(t, f), true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := src.Inspect(ctx, ctrID)
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("hanging runtime: %v, want a deadline error", err)
	}
	n := New([]Source{src}, Options{Timeout: 100 * time.Millisecond, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	defer n.Close()
	for deadline := time.Now().Add(30 * time.Second); n.Stats().Failed < 2; time.Sleep(time.Millisecond) {
		if c := n.Lookup(ctrID); c != nil {
			t.Fatalf("named %+v while the runtime hangs", c)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no question timed out: %+v", n.Stats())
		}
	}
	close(hold)
	if c := eventually(t, n, ctrID); c.Name != "web" || c.PodName != "web-7d4b9" || c.ID != ctrID {
		t.Errorf("after the runtime answered: %+v", c)
	}
	if ws := n.Warnings(); len(ws) != 1 {
		t.Errorf("warnings %v, want the timeout once", ws)
	}
}

// CRISources: the configured sockets, each said to be configured; else
// the defaults, each directory once.
func TestCRISources(t *testing.T) {
	got := CRISources([]string{"/a.sock", "/b.sock"})
	if len(got) != 2 || got[0].String() != "CRI runtime at /a.sock" || !got[0].Explicit() || !got[1].Explicit() {
		t.Errorf("configured: %v", got)
	}
	def := CRISources(nil)
	if len(def) < 2 || len(def) > len(CRISockets) {
		t.Fatalf("defaults: %v", def)
	}
	seen := map[string]bool{}
	for _, s := range def {
		if s.Explicit() {
			t.Errorf("%s: a default socket said to be configured", s)
		}
		seen[s.String()] = true
	}
	for _, want := range []string{"/run/containerd/containerd.sock", "/run/crio/crio.sock"} {
		if !seen["CRI runtime at "+want] {
			t.Errorf("defaults %v lack %s", def, want)
		}
	}
	if fi, err := os.Lstat("/var/run"); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if dst, _ := filepath.EvalSymlinks("/var/run"); dst == "/run" && len(def) != 2 {
			t.Errorf("/var/run is /run, yet %d sources: %v", len(def), def)
		}
	}
}

// Close ends the connection; Namer.Close closes its sources.
func TestCRIClose(t *testing.T) {
	f := newFakeCRI()
	src := NewCRI(serveCRI(t, f), true)
	n := New([]Source{src}, Options{})
	eventually(t, n, ctrID)
	n.Close()
	if _, err := src.Inspect(context.Background(), ctrID); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("after Close: %v", err)
	}
}

// Paths through a symlinked directory are one socket, even when the
// socket's own directory does not exist (yet).
func TestUniquePaths(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("run", filepath.Join(dir, "varrun")); err != nil {
		t.Fatal(err)
	}
	in := []string{
		filepath.Join(dir, "run/crio/crio.sock"),
		filepath.Join(dir, "varrun/crio/crio.sock"),
		filepath.Join(dir, "run/containerd/containerd.sock"),
		filepath.Join(dir, "other/containerd.sock"),
		filepath.Join(dir, "other/containerd.sock"),
	}
	got := uniquePaths(in)
	want := []string{in[0], in[2], in[3]}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %v, want %v", got, want)
	}
}

// Replies captured from containerd 1.6.20 (Debian 12) for a container
// with the kubelet's labels and for its pod's sandbox, as protobuf.
const (
	capturedCtr     = "fed93742f6c4af81570eda05ff2a1135119381d17a56cce2daefb829b418b0da"
	capturedSandbox = "712adfcfb77e45a3c96272fa1f2ebf32eab5076d330146c3505bdc24122b3c75"
)

func readCaptured(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCapturedCRIReplies(t *testing.T) {
	var cs runtimeapi.ContainerStatusResponse
	if err := proto.Unmarshal(readCaptured(t, "containerd-1.6.20-ContainerStatus.pb"), &cs); err != nil {
		t.Fatal(err)
	}
	c, err := parseContainerStatus(capturedCtr, cs.GetStatus())
	want := event.Container{Name: "web", Image: "docker.io/connlogd-test/busybox:1",
		ImageID: "sha256:383aeec9d42a7d5da9b975248da881fb4f428e74210cb3916028ebae174c9954",
		PodName: "web-0", PodNamespace: "shop", PodUID: "0b7b3a4e-0000-4000-8000-000000000002"}
	if err != nil || c != want {
		t.Errorf("container: %+v, %v\nwant %+v", c, err, want)
	}
	if _, err := parseContainerStatus(strings.Repeat("0", 64), cs.GetStatus()); err == nil {
		t.Error("a reply about another container was taken")
	}
	var ps runtimeapi.PodSandboxStatusResponse
	if err := proto.Unmarshal(readCaptured(t, "containerd-1.6.20-PodSandboxStatus.pb"), &ps); err != nil {
		t.Fatal(err)
	}
	c, err = parseSandbox(capturedSandbox, ps.GetStatus())
	if want := (event.Container{PodName: "web-0", PodNamespace: "shop", PodUID: "0b7b3a4e-0000-4000-8000-000000000002"}); err != nil || c != want {
		t.Errorf("sandbox: %+v, %v", c, err)
	}
}

// FuzzParseCRIReplies: whatever bytes a runtime sends, a reply that
// decodes gives bounded, valid UTF-8 values or an error.
func FuzzParseCRIReplies(f *testing.F) {
	f.Add(readCaptured(f, "containerd-1.6.20-ContainerStatus.pb"))
	f.Add(readCaptured(f, "containerd-1.6.20-PodSandboxStatus.pb"))
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(c event.Container) {
			for _, v := range []string{c.Name, c.Image, c.ImageID, c.PodName, c.PodNamespace, c.PodUID} {
				if len(v) > maxField || !utf8.ValidString(v) {
					t.Fatalf("value %q of %d bytes", v, len(v))
				}
			}
		}
		var cs runtimeapi.ContainerStatusResponse
		if proto.Unmarshal(b, &cs) == nil {
			if c, err := parseContainerStatus(cs.GetStatus().GetId(), cs.GetStatus()); err == nil {
				check(c)
			}
		}
		var ps runtimeapi.PodSandboxStatusResponse
		if proto.Unmarshal(b, &ps) == nil {
			if c, err := parseSandbox(ps.GetStatus().GetId(), ps.GetStatus()); err == nil {
				check(c)
			}
		}
	})
}
