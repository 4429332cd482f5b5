package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/connlogd/connlogd/event"
)

// CRISockets are where containerd and CRI-O serve the Kubernetes
// Container Runtime Interface by default (/var/run is usually /run; both
// are tried when they differ).
var CRISockets = []string{
	"/run/containerd/containerd.sock",
	"/var/run/containerd/containerd.sock",
	"/run/crio/crio.sock",
	"/var/run/crio/crio.sock",
}

// maxCRIHeaders bounds the metadata (headers and trailers) of a CRI
// reply; a runtime sends a few hundred bytes.
const maxCRIHeaders = 64 << 10

func init() {
	// gRPC logs its errors to stderr by default; this package never logs
	// (an RPC's failure comes back as its error, which the Namer turns
	// into one warning), and nothing else in connlogd speaks gRPC.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
}

// CRI asks a container runtime through the Kubernetes Container Runtime
// Interface (k8s.io/cri-api, runtime.v1.RuntimeService) on its unix
// socket: containerd's CRI plugin, CRI-O. Unlike docker's plain HTTP API,
// the CRI is gRPC only, so the generated client and grpc-go are used
// rather than a hand-written HTTP/2 and protobuf exchange.
type CRI struct {
	path     string
	explicit bool

	mu      sync.Mutex
	conn    *grpc.ClientConn // made at the first question
	client  runtimeapi.RuntimeServiceClient
	dialErr error // the last connect's error, to tell an absent runtime
	closed  bool
}

// NewCRI returns the Source of the CRI runtime listening on the unix
// socket at path. explicit says the configuration named it. Nothing is
// connected before the first Inspect.
func NewCRI(path string, explicit bool) *CRI {
	return &CRI{path: path, explicit: explicit}
}

func (c *CRI) String() string { return "CRI runtime at " + c.path }

// Explicit implements Source.
func (c *CRI) Explicit() bool { return c.explicit }

// Close drops the connection; a later Inspect fails.
func (c *CRI) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.client = nil, nil
	return err
}

// runtime returns the client, connecting lazily: grpc connects (and
// reconnects, with its own backoff) at the first RPC.
func (c *CRI) runtime() (runtimeapi.RuntimeServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("closed")
	}
	if c.client != nil {
		return c.client, nil
	}
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", c.path)
		c.mu.Lock()
		c.dialErr = err
		c.mu.Unlock()
		return conn, err
	}
	bo := backoff.DefaultConfig
	// A runtime that starts after connlogd is found within half a minute
	// (grpc's default waits up to two).
	bo.MaxDelay = 30 * time.Second
	conn, err := grpc.NewClient("passthrough:///localhost",
		grpc.WithContextDialer(dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: 5 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxInspect)),
		grpc.WithMaxHeaderListSize(maxCRIHeaders),
		grpc.WithDisableServiceConfig(),
		grpc.WithUserAgent("connlogd"),
	)
	if err != nil {
		return nil, fmt.Errorf("grpc client: %w", err)
	}
	c.conn, c.client = conn, runtimeapi.NewRuntimeServiceClient(conn)
	return c.client, nil
}

// Inspect implements Source. The id is a container's
// (ContainerStatus), or a pod sandbox's (PodSandboxStatus): a sandbox's
// process (pause) has a cgroup of its own too. A container's pod comes
// from the labels the kubelet sets, or else from its sandbox
// (ListContainers for the sandbox's id, then PodSandboxStatus).
func (c *CRI) Inspect(ctx context.Context, id string) (event.Container, error) {
	if !isContainerID(id) {
		return event.Container{}, fmt.Errorf("inspect %q: %w", id, ErrNotFound)
	}
	rt, err := c.runtime()
	if err != nil {
		return event.Container{}, fmt.Errorf("inspect: %w", err)
	}
	cs, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err == nil {
		return c.container(ctx, rt, id, cs.GetStatus())
	}
	if status.Code(err) != codes.NotFound {
		return event.Container{}, c.failed("ContainerStatus", err)
	}
	ps, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if status.Code(err) == codes.NotFound {
		return event.Container{}, ErrNotFound
	}
	if err != nil {
		return event.Container{}, c.failed("PodSandboxStatus", err)
	}
	return parseSandbox(id, ps.GetStatus())
}

func (c *CRI) container(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string, st *runtimeapi.ContainerStatus) (event.Container, error) {
	info, err := parseContainerStatus(id, st)
	if err != nil || (info.PodName != "" && info.PodNamespace != "" && info.PodUID != "") {
		return info, err
	}
	// No kubelet labels (a container made by crictl, or by another CRI
	// client): its sandbox knows the pod. The container's own answer
	// stands if the sandbox cannot be asked.
	l, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil {
		return info, nil
	}
	var sandbox string
	for _, ct := range l.GetContainers() {
		if ct.GetId() == id {
			sandbox = ct.GetPodSandboxId()
		}
	}
	if sandbox == "" {
		return info, nil
	}
	ps, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sandbox})
	if err != nil {
		return info, nil
	}
	m := ps.GetStatus().GetMetadata()
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = clip(v, maxField)
		}
	}
	fill(&info.PodName, m.GetName())
	fill(&info.PodNamespace, m.GetNamespace())
	fill(&info.PodUID, m.GetUid())
	return info, nil
}

// failed wraps an RPC's error, as ErrUnreachable when nothing listens on
// the socket or what listens serves no CRI (docker's containerd, whose
// CRI plugin is off).
func (c *CRI) failed(op string, err error) error {
	switch status.Code(err) {
	case codes.Unimplemented:
		return fmt.Errorf("%s: %w: the runtime serves no CRI (is its CRI plugin disabled?): %w", op, ErrUnreachable, err)
	case codes.Unavailable:
		c.mu.Lock()
		dialErr := c.dialErr
		c.mu.Unlock()
		if errors.Is(dialErr, syscall.ENOENT) || errors.Is(dialErr, syscall.ECONNREFUSED) {
			return fmt.Errorf("%s: %w: %w", op, ErrUnreachable, dialErr)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// parseContainerStatus reads the fields connlogd reports from a
// ContainerStatus reply (not verbose) about container id.
func parseContainerStatus(id string, st *runtimeapi.ContainerStatus) (event.Container, error) {
	if st == nil || st.GetMetadata() == nil {
		return event.Container{}, errors.New("ContainerStatus: reply has no status metadata")
	}
	if st.GetId() != id {
		return event.Container{}, fmt.Errorf("ContainerStatus: asked for %s, answered for %q", id, clip(st.GetId(), 80))
	}
	// The image as the user wrote it when the runtime has it (kubelet
	// 1.30 and later send it); else the runtime's reference, which
	// containerd and CRI-O make the image's first tag.
	image := st.GetImage().GetUserSpecifiedImage()
	if image == "" {
		image = st.GetImage().GetImage()
	}
	// image_id is the CRI's newer field; image_ref, older, is the image's
	// id or a digested reference (repo@sha256:…), of which the digest is
	// kept: the repository is in the image, and an id is a digest.
	imageID := st.GetImageId()
	if imageID == "" {
		imageID = st.GetImageRef()
	}
	if _, digest, ok := strings.Cut(imageID, "@"); ok {
		imageID = digest
	}
	labels := st.GetLabels()
	return event.Container{
		Name:         clip(st.GetMetadata().GetName(), maxField),
		Image:        clip(image, maxField),
		ImageID:      clip(imageID, maxField),
		PodName:      clip(labels[labelPodName], maxField),
		PodNamespace: clip(labels[labelPodNamespace], maxField),
		PodUID:       clip(labels[labelPodUID], maxField),
	}, nil
}

// parseSandbox reads a pod sandbox's PodSandboxStatus reply: the pod
// fields only, since a sandbox is no container of the pod's spec and has
// no container name.
func parseSandbox(id string, st *runtimeapi.PodSandboxStatus) (event.Container, error) {
	if st == nil || st.GetMetadata() == nil {
		return event.Container{}, errors.New("PodSandboxStatus: reply has no status metadata")
	}
	if st.GetId() != id {
		return event.Container{}, fmt.Errorf("PodSandboxStatus: asked for %s, answered for %q", id, clip(st.GetId(), 80))
	}
	m := st.GetMetadata()
	return event.Container{
		PodName:      clip(m.GetName(), maxField),
		PodNamespace: clip(m.GetNamespace(), maxField),
		PodUID:       clip(m.GetUid(), maxField),
	}, nil
}

// CRISources returns the Sources of the CRI sockets at paths, or, when
// paths is empty, of the default sockets of containerd and CRI-O.
func CRISources(paths []string) []Source {
	if len(paths) > 0 {
		out := make([]Source, 0, len(paths))
		for _, p := range paths {
			out = append(out, NewCRI(p, true))
		}
		return out
	}
	var out []Source
	for _, p := range uniquePaths(CRISockets) {
		out = append(out, NewCRI(p, false))
	}
	return out
}

// uniquePaths drops the paths that name a socket already listed through
// a symlinked directory (/var/run is usually /run), whether or not the
// socket's own directory exists yet.
func uniquePaths(paths []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		key := resolveExisting(p)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, p)
	}
	return out
}

// resolveExisting resolves the symlinks of the longest leading part of
// path that exists.
func resolveExisting(path string) string {
	rest := ""
	for dir := path; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if dir == filepath.Dir(dir) {
			return path
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}
