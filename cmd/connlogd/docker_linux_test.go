//go:build linux

package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/dockertest"
)

// containerScript serves on the container's loopback and makes 20
// connections to itself, 100 ms apart, half a second after starting.
const containerScript = `mkdir -p /www && echo hello > /www/index.html && httpd -p 127.0.0.1:8080 -h /www && sleep 0.5 &&
for i in $(seq 20); do wget -q -O /dev/null http://127.0.0.1:8080/; sleep 0.1; done; echo done; sleep 600`

// TestDockerContainerNamed runs a real docker daemon and a container with
// no network but loopback: connlogd, with namespaces: all and the
// daemon's socket named, logs the container's connections with its id,
// name and image. The names come from the runtime asynchronously: once an
// event of the container carries them, every later one does.
func TestDockerContainerNamed(t *testing.T) {
	dk := dockertest.Start(t)
	img := dk.BusyboxImage(t)
	imgID := dk.Docker(t, "image", "inspect", "--format", "{{.Id}}", img)
	d := startHostDaemon(t, "namespaces: all\ncontainers:\n  docker_sockets: ["+dk.Sock+"]")
	id := dk.Docker(t, "run", "-d", "--network", "none", "--name", "connlogd-web", img, "sh", "-c", containerScript)
	pid := dk.Docker(t, "inspect", "--format", "{{.State.Pid}}", id)
	ino := nsInodeOf(t, "/proc/"+pid+"/ns/net")

	clients := func(evs []ev) (appeared, closed map[int]bool) {
		appeared, closed = map[int]bool{}, map[int]bool{}
		for _, e := range evs {
			if e.num("netns") != ino || e.str("proto") != "tcp" || e.num("dst_port") != 8080 {
				continue
			}
			switch e.str("event") {
			case "appeared":
				appeared[int(e.num("src_port"))] = true
			case "closed":
				closed[int(e.num("src_port"))] = true
			}
		}
		return appeared, closed
	}
	listens := func(evs []ev) bool {
		for _, e := range evs {
			if e.num("netns") == ino && e.str("proto") == "tcp" && e.str("event") == "appeared" && e.str("state") == "listen" && e.num("src_port") == 8080 {
				return true
			}
		}
		return false
	}
	// The closes come from destroy notifications at once, the listener
	// from a poll of the container's namespace: with namespaces: all on a
	// busy machine (every other test's namespaces too) that poll may come
	// later, in turn with the others. Wait for both.
	evs := d.waitFor("the container's listener and its 20 connections closed", 2*time.Minute, func(evs []ev) bool {
		_, closed := clients(evs)
		return len(closed) >= 20 && listens(evs)
	})
	appeared, closed := clients(evs)
	if len(appeared) != 20 || len(closed) != 20 {
		t.Errorf("%d client sockets appeared, %d closed; want 20 and 20", len(appeared), len(closed))
	}
	named, total := 0, 0
	for _, e := range evs {
		if e.num("netns") != ino || e.str("proto") != "tcp" {
			continue
		}
		total++
		if e.str("container_id") != id {
			t.Errorf("event of the container without its id: %v", e)
			continue
		}
		if e.str("container_name") == "" && named > 0 {
			t.Errorf("event without the container's name after one had it: %v", e)
		}
		if e.str("container_name") != "" {
			named++
			if e.str("container_name") != "connlogd-web" || e.str("container_image") != img || e.str("container_image_id") != imgID {
				t.Errorf("container fields %q %q %q, want connlogd-web %s %s", e.str("container_name"), e.str("container_image"), e.str("container_image_id"), img, imgID)
			}
		}
	}
	if named == 0 {
		t.Fatalf("no event of the container's %d carries its name; daemon log:\n%s", total, d.logs())
	}
	t.Logf("%d of the container's %d events carry its name", named, total)
}

func nsInodeOf(t *testing.T, path string) float64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return float64(st.Ino)
}
