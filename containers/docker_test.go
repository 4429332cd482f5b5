package containers

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/connlogd/connlogd/event"
)

// inspectReply is a trimmed reply of docker 20.10 to GET
// /containers/ID/json, for a container a kubelet made through cri-dockerd.
const inspectReply = `{"Id":"` + "0000000000000000000000000000000000000000000000000000000000000001" + `",
"Created":"2026-12-06T22:00:00Z","Path":"/bin/httpd","Args":["-f"],
"State":{"Status":"running","Running":true,"Pid":4242},
"Image":"sha256:1b2c3d","Name":"/k8s_web_web-7d4b9_shop_9f1c_0",
"Config":{"Hostname":"web-7d4b9","Env":["PATH=/bin"],"Image":"registry.local/shop/web:1.4",
"Labels":{"io.kubernetes.pod.name":"web-7d4b9","io.kubernetes.pod.namespace":"shop",
"io.kubernetes.pod.uid":"9f1c2b3a-0000-4000-8000-000000000001","io.kubernetes.container.name":"web"}},
"NetworkSettings":{"SandboxKey":"/var/run/docker/netns/abc"}}`

func TestParseDockerInspect(t *testing.T) {
	got, err := ParseDockerInspect([]byte(inspectReply))
	if err != nil {
		t.Fatal(err)
	}
	want := event.Container{Name: "k8s_web_web-7d4b9_shop_9f1c_0", Image: "registry.local/shop/web:1.4", ImageID: "sha256:1b2c3d",
		PodName: "web-7d4b9", PodNamespace: "shop", PodUID: "9f1c2b3a-0000-4000-8000-000000000001"}
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	plain, err := ParseDockerInspect([]byte(`{"Name":"/db","Config":{"Image":"postgres","Labels":null}}`))
	if err != nil || plain != (event.Container{Name: "db", Image: "postgres"}) {
		t.Errorf("container without labels: %+v, %v", plain, err)
	}
	long := strings.Repeat("é", 1000) // 2,000 bytes
	clipped, err := ParseDockerInspect([]byte(`{"Name":"/` + long + `","Config":{"Image":"i\udc00x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(clipped.Name) > maxField || !strings.HasPrefix(long, clipped.Name) || len(clipped.Name) < maxField-1 {
		t.Errorf("name of %d bytes not cut on a rune boundary to %d: %d bytes", len(long), maxField, len(clipped.Name))
	}
	if clipped.Image != "i\uFFFDx" {
		t.Errorf("image %q", clipped.Image)
	}
	for _, bad := range []string{``, `[]`, `{"Name":"/x"}`, `{"Config":{"Image":3}}`, `{`} {
		if _, err := ParseDockerInspect([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseDockerInspect(f *testing.F) {
	f.Add([]byte(inspectReply))
	f.Add([]byte(`{"Name":"/db","Config":{"Image":"postgres"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseDockerInspect(b)
		if err != nil {
			return
		}
		for _, v := range []string{c.Name, c.Image, c.ImageID, c.PodName, c.PodNamespace, c.PodUID} {
			if len(v) > maxField || !utf8.ValidString(v) {
				t.Fatalf("value %q of %d bytes", v, len(v))
			}
		}
	})
}

// fakeDocker serves the Engine API's inspect on a unix socket.
func fakeDocker(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestDockerInspect(t *testing.T) {
	cid := "0000000000000000000000000000000000000000000000000000000000000001"
	var paths []string
	sock := fakeDocker(t, func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.Method+" "+r.URL.Path)
		switch r.URL.Path {
		case "/containers/" + cid + "/json":
			w.Write([]byte(inspectReply))
		case "/containers/" + strings.Repeat("f", 64) + "/json":
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"message":"daemon is broken"}`))
		case "/containers/" + strings.Repeat("e", 64) + "/json":
			w.Write([]byte(`{"Name":"/big","Config":{"Image":"` + strings.Repeat("x", maxInspect) + `"}}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"No such container"}`))
		}
	})
	d := NewDocker(sock, true)
	ctx := context.Background()
	c, err := d.Inspect(ctx, cid)
	if err != nil || c.Name != "k8s_web_web-7d4b9_shop_9f1c_0" || c.PodNamespace != "shop" {
		t.Errorf("got %+v, %v", c, err)
	}
	if len(paths) != 1 || paths[0] != "GET /containers/"+cid+"/json" {
		t.Errorf("requests %v", paths)
	}
	if _, err := d.Inspect(ctx, strings.Repeat("a", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown container: %v", err)
	}
	if _, err := d.Inspect(ctx, strings.Repeat("f", 64)); err == nil || !strings.Contains(err.Error(), "daemon is broken") {
		t.Errorf("server error: %v", err)
	}
	if _, err := d.Inspect(ctx, strings.Repeat("e", 64)); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("oversized reply: %v", err)
	}
	// Nothing but an id goes into the request path.
	n := len(paths)
	for _, bad := range []string{"../../info", strings.Repeat("A", 64), "abc"} {
		if _, err := d.Inspect(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if len(paths) != n {
		t.Errorf("a request was made for a malformed id: %v", paths[n:])
	}
}

func TestDockerUnreachableAndSlow(t *testing.T) {
	d := NewDocker(filepath.Join(t.TempDir(), "absent.sock"), false)
	if _, err := d.Inspect(context.Background(), strings.Repeat("a", 64)); !errors.Is(err, ErrUnreachable) {
		t.Errorf("absent socket: %v", err)
	}
	release := make(chan struct{})
	defer close(release)
	sock := fakeDocker(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	d = NewDocker(sock, false)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := d.Inspect(ctx, strings.Repeat("a", 64)); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("hanging daemon: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Inspect did not return at its deadline")
	}
}
