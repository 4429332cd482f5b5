//go:build linux

package containers_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/containers"
	"github.com/connlogd/connlogd/internal/dockertest"
)

// TestRealDocker asks a real docker daemon, started by the test, about a
// container it runs: with labels as the kubelet sets them, the pod
// fields come out too.
func TestRealDocker(t *testing.T) {
	d := dockertest.Start(t)
	img := d.BusyboxImage(t)
	id := d.Docker(t, "run", "-d", "--network", "none", "--name", "named-by-test",
		"--label", "io.kubernetes.pod.name=web-0",
		"--label", "io.kubernetes.pod.namespace=shop",
		"--label", "io.kubernetes.pod.uid=0b7b3a4e-0000-4000-8000-000000000001",
		img, "sleep", "300")
	if len(id) != 64 {
		t.Fatalf("docker run printed %q, not an id", id)
	}
	src := containers.NewDocker(d.Sock, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := src.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	imageID := d.Docker(t, "image", "inspect", "--format", "{{.Id}}", img)
	if c.Name != "named-by-test" || c.Image != img || c.ImageID != imageID || c.PodName != "web-0" || c.PodNamespace != "shop" || c.PodUID != "0b7b3a4e-0000-4000-8000-000000000001" {
		t.Errorf("got %+v", c)
	}
	if _, err := src.Inspect(ctx, strings.Repeat("a", 64)); !errors.Is(err, containers.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	// Through a Namer, as the daemon asks.
	n := containers.New([]containers.Source{containers.NewDocker("/nonexistent/docker.sock", false), src}, containers.Options{})
	defer n.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if got := n.Lookup(id); got != nil {
			if c.ID = id; *got != c {
				t.Errorf("namer: %+v, want %+v", *got, c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("namer never answered: %+v, warnings %v", n.Stats(), n.Warnings())
		}
	}
	if ws := n.Warnings(); len(ws) != 0 {
		t.Errorf("warnings: %v", ws)
	}
}
