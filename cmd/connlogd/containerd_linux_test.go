//go:build linux

package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/containerdtest"
)

// TestContainerdPodNamed runs a real containerd with its CRI plugin, and
// in a Kubernetes-style pod (made through the CRI, as a kubelet does, in
// the host's network namespace) a container that serves on loopback with
// busybox nc and connects to itself five times, each connection held 2 s
// so that polls see it. connlogd, with only the CRI runtime's socket
// named, logs those sockets with the container's id (from its cgroup),
// its name and image, and its pod's name, namespace and uid (from the
// pod's sandbox: the container has no kubelet labels). The names come
// asynchronously: once an event of the container carries them, every
// later one does.
func TestContainerdPodNamed(t *testing.T) {
	cd := containerdtest.Start(t)
	d := startHostDaemon(t, "containers:\n  runtimes: [cri]\n  cri_sockets: ["+cd.Sock+"]")
	pod := containerdtest.Pod{Name: "shop-web-0", Namespace: "shop", UID: "5d1e7c2a-0000-4000-8000-00000000c0de"}
	sandbox, podCfg := cd.RunPod(t, pod)
	port := containerdtest.FreePort(t)
	script := fmt.Sprintf(`printf '#!/bin/sh\nsleep 2\n' > /tmp/hold && chmod +x /tmp/hold &&
nc -ll -p %d -e /tmp/hold & sleep 0.5;
for i in $(seq 5); do sleep 3 | nc 127.0.0.1 %d & sleep 0.2; done; wait; echo done; sleep 600`, port, port)
	id := cd.RunContainer(t, sandbox, podCfg, "web", nil, "sh", "-c", script)

	ours := func(e ev) bool {
		return e.str("proto") == "tcp" && (e.num("src_port") == float64(port) || e.num("dst_port") == float64(port))
	}
	evs := d.waitFor("the container's listener and its 5 connections closed", 2*time.Minute, func(evs []ev) bool {
		closed, listens := 0, false
		for _, e := range evs {
			if !ours(e) {
				continue
			}
			if e.str("event") == "closed" && e.num("dst_port") == float64(port) {
				closed++
			}
			if e.str("event") == "appeared" && e.str("state") == "listen" {
				listens = true
			}
		}
		return closed >= 5 && listens
	})
	named, total := 0, 0
	for _, e := range evs {
		if !ours(e) {
			continue
		}
		total++
		if e.str("container_id") != id {
			// A socket a poll never saw is known from the kernel's
			// destroy notification only, whose namespace (the host's)
			// names no container.
			if e.str("container_id") != "" || e["short_lived"] != true {
				t.Errorf("event of the container without its id %s: %v", id, e)
			}
			continue
		}
		if e.str("pod_uid") == "" && named > 0 {
			t.Errorf("event without the container's names after one had them: %v", e)
		}
		if e.str("pod_uid") == "" {
			continue
		}
		if named++; named == 1 {
			t.Logf("first named event: %v", e)
		}
		if e.str("container_name") != "web" || e.str("container_image") != containerdtest.Image || !strings.HasPrefix(e.str("container_image_id"), "sha256:") ||
			e.str("pod_name") != pod.Name || e.str("pod_namespace") != pod.Namespace || e.str("pod_uid") != pod.UID {
			t.Errorf("container fields %q %q %q %q %q %q, want web %s sha256:… %s %s %s", e.str("container_name"), e.str("container_image"), e.str("container_image_id"),
				e.str("pod_name"), e.str("pod_namespace"), e.str("pod_uid"), containerdtest.Image, pod.Name, pod.Namespace, pod.UID)
		}
	}
	if named == 0 {
		t.Fatalf("no event of the container's %d carries its names; daemon log:\n%s", total, d.logs())
	}
	if strings.Contains(d.logs(), "containers:") {
		t.Errorf("the daemon warned about the runtime:\n%s", d.logs())
	}
	t.Logf("%d of the container's %d events carry its names", named, total)
}
