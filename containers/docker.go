package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/connlogd/connlogd/event"
)

// DockerSockets are where docker's daemon listens by default (/var/run is
// usually /run through a symlink; both are tried when they differ).
var DockerSockets = []string{"/run/docker.sock", "/var/run/docker.sock"}

// Kubernetes pod labels, as the kubelet sets them on its containers
// (pkg/kubelet/types/labels.go) and cri-dockerd passes them to docker.
const (
	labelPodName      = "io.kubernetes.pod.name"
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodUID       = "io.kubernetes.pod.uid"
)

// Limits on what a runtime's answer may hold.
const (
	// maxInspect bounds an inspect reply: it carries the container's
	// environment and mounts, and a runtime must not make us read without
	// end.
	maxInspect = 4 << 20
	// maxField bounds each reported value (a name, an image reference).
	maxField = 1024
)

// Docker asks a docker daemon through its Engine API.
type Docker struct {
	path     string
	explicit bool
	client   *http.Client
}

// NewDocker returns the Source of the docker daemon listening on the unix
// socket at path. explicit says the configuration named it.
func NewDocker(path string, explicit bool) *Docker {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:        2,
		MaxIdleConnsPerHost: 2,
		DisableCompression:  true,
		// No proxy: the socket is local whatever the environment says.
		Proxy: nil,
	}
	return &Docker{path: path, explicit: explicit, client: &http.Client{Transport: tr}}
}

func (d *Docker) String() string { return "docker at " + d.path }

// Explicit implements Source.
func (d *Docker) Explicit() bool { return d.explicit }

// Inspect implements Source: GET /containers/ID/json.
func (d *Docker) Inspect(ctx context.Context, id string) (event.Container, error) {
	if !isContainerID(id) {
		// Never put anything but an id in the request path.
		return event.Container{}, fmt.Errorf("inspect %q: %w", id, ErrNotFound)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/containers/"+id+"/json", nil)
	if err != nil {
		return event.Container{}, fmt.Errorf("inspect: %w", err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return event.Container{}, fmt.Errorf("inspect: %w: %w", ErrUnreachable, err)
		}
		return event.Container{}, fmt.Errorf("inspect: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInspect+1))
	if err != nil {
		return event.Container{}, fmt.Errorf("inspect: read reply: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return event.Container{}, ErrNotFound
	case resp.StatusCode != http.StatusOK:
		return event.Container{}, fmt.Errorf("inspect: %s: %s", resp.Status, clip(strings.TrimSpace(string(body)), 200))
	case len(body) > maxInspect:
		return event.Container{}, fmt.Errorf("inspect: reply longer than %d bytes", maxInspect)
	}
	return ParseDockerInspect(body)
}

// ParseDockerInspect reads the fields connlogd reports from the reply to
// GET /containers/ID/json. Values are cut to 1,024 bytes and must be
// UTF-8.
func ParseDockerInspect(body []byte) (event.Container, error) {
	var r struct {
		Name   string
		Image  string // the image's id
		Config *struct {
			Image  string
			Labels map[string]string
		}
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return event.Container{}, fmt.Errorf("inspect: decode reply: %w", err)
	}
	if r.Config == nil {
		return event.Container{}, errors.New("inspect: reply has no Config")
	}
	c := event.Container{
		Name:         clip(strings.TrimPrefix(r.Name, "/"), maxField),
		Image:        clip(r.Config.Image, maxField),
		ImageID:      clip(r.Image, maxField),
		PodName:      clip(r.Config.Labels[labelPodName], maxField),
		PodNamespace: clip(r.Config.Labels[labelPodNamespace], maxField),
		PodUID:       clip(r.Config.Labels[labelPodUID], maxField),
	}
	return c, nil
}

// clip cuts s to at most n bytes on a rune boundary, and replaces what
// is not UTF-8.
func clip(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// isContainerID reports whether s is a full container id: 64 lowercase
// hex digits, the form package attribution reports.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// DockerSources returns the Sources of the docker sockets at paths, or,
// when paths is empty, of docker's default sockets, each directory once
// (/var/run is usually /run).
func DockerSources(paths []string) []Source {
	var out []Source
	if len(paths) > 0 {
		for _, p := range paths {
			out = append(out, NewDocker(p, true))
		}
		return out
	}
	for _, p := range uniquePaths(DockerSockets) {
		out = append(out, NewDocker(p, false))
	}
	return out
}
