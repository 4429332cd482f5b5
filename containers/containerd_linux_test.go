//go:build linux

package containers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/containers"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/containerdtest"
)

// TestRealContainerd asks a real containerd's CRI plugin, started by the
// test, about a pod it runs: a container with the kubelet's labels, one
// without (its pod comes from its sandbox), and the sandbox itself. The
// containers' cgroups, made by containerd and runc as for a kubelet with
// the cgroupfs driver, name their ids.
func TestRealContainerd(t *testing.T) {
	d := containerdtest.Start(t)
	pod := containerdtest.Pod{Name: "web-0", Namespace: "shop", UID: "0b7b3a4e-0000-4000-8000-000000000002"}
	sandbox, podCfg := d.RunPod(t, pod)
	labelled := d.RunContainer(t, sandbox, podCfg, "web", map[string]string{
		"io.kubernetes.pod.name":      pod.Name,
		"io.kubernetes.pod.namespace": pod.Namespace,
		"io.kubernetes.pod.uid":       pod.UID,
	}, "sleep", "300")
	bare := d.RunContainer(t, sandbox, podCfg, "sidecar", nil, "sleep", "300")

	src := containers.NewCRI(d.Sock, true)
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct{ id, name string }{{labelled, "web"}, {bare, "sidecar"}} {
		got, err := src.Inspect(ctx, c.id)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got.Name != c.name || got.Image != containerdtest.Image || !strings.HasPrefix(got.ImageID, "sha256:") ||
			got.PodName != pod.Name || got.PodNamespace != pod.Namespace || got.PodUID != pod.UID {
			t.Errorf("%s: got %+v", c.name, got)
		}
		if cg := cgroupOf(t, d, c.id); cg != "" {
			if _, id := attribution.ParseCgroupPath(cg); id != c.id {
				t.Errorf("%s: cgroup %s names container %q, want %s", c.name, cg, id, c.id)
			}
		}
	}
	got, err := src.Inspect(ctx, sandbox)
	if want := (event.Container{PodName: pod.Name, PodNamespace: pod.Namespace, PodUID: pod.UID}); err != nil || got != want {
		t.Errorf("sandbox: %+v, %v; want %+v", got, err, want)
	}
	if _, err := src.Inspect(ctx, strings.Repeat("a", 64)); !errors.Is(err, containers.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	// Through a Namer, as the daemon asks, with a default socket where
	// nothing listens before it.
	n := containers.New([]containers.Source{containers.NewCRI("/nonexistent/containerd.sock", false), src}, containers.Options{})
	defer n.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if c := n.Lookup(labelled); c != nil {
			if c.Name != "web" || c.PodUID != pod.UID {
				t.Errorf("namer: %+v", *c)
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

// cgroupOf returns the cgroup v2 path of container id's process, or ""
// when the host has no cgroup v2 hierarchy.
func cgroupOf(t *testing.T, d *containerdtest.Daemon, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := d.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Pid int }
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("verbose status without a pid: %v %q", err, st.GetInfo()["info"])
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", info.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}
