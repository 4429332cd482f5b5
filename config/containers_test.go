package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseContainers(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       Containers
	}{
		{"absent: names from every runtime's default sockets", "interval: 1s\n", Containers{Names: true, Docker: true, CRI: true}},
		{"off", "containers:\n  names: false\n", Containers{Names: false, Docker: true, CRI: true}},
		{"other sockets", "containers:\n  docker_sockets: [/srv/docker.sock, /run/user/1000/docker.sock]\n",
			Containers{Names: true, Docker: true, CRI: true, DockerSockets: []string{"/srv/docker.sock", "/run/user/1000/docker.sock"}}},
		{"other CRI socket", "containers:\n  cri_sockets: [/run/k3s/containerd/containerd.sock]\n",
			Containers{Names: true, Docker: true, CRI: true, CRISockets: []string{"/run/k3s/containerd/containerd.sock"}}},
		{"CRI only", "containers:\n  cri_sockets: [/a.sock]\n  runtimes: [cri]\n",
			Containers{Names: true, CRI: true, CRISockets: []string{"/a.sock"}}},
		{"docker only", "containers:\n  runtimes: [docker]\n", Containers{Names: true, Docker: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), "c.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Containers, tt.want) {
				t.Errorf("got %+v, want %+v", c.Containers, tt.want)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseContainersErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"not a mapping", "containers: true\n", `c.yaml:1: containers: want a mapping with names, runtimes, docker_sockets or cri_sockets, not a single value`},
		{"bad bool", "containers:\n  names: yes\n", `c.yaml:2: containers.names: "yes" is not true or false`},
		{"relative socket", "containers:\n  docker_sockets: [docker.sock]\n", `c.yaml:2: containers.docker_sockets: "docker.sock" is not an absolute path`},
		{"empty list", "containers:\n  docker_sockets: []\n", `empty list; leave the key out for the runtime's default sockets`},
		{"duplicate", "containers:\n  docker_sockets:\n    - /a.sock\n    - /a.sock\n", `c.yaml:4: containers.docker_sockets: "/a.sock" listed twice (first as docker_sockets[0])`},
		{"duplicate CRI socket", "containers:\n  cri_sockets:\n    - /a.sock\n    - /a.sock\n", `c.yaml:4: containers.cri_sockets: "/a.sock" listed twice (first as cri_sockets[0])`},
		{"relative CRI socket", "containers:\n  cri_sockets: [crio.sock]\n", `c.yaml:2: containers.cri_sockets: "crio.sock" is not an absolute path`},
		{"unknown key", "containers:\n  podman_sockets: [/a]\n", `c.yaml:2: containers: unknown key "podman_sockets" (want names, runtimes, docker_sockets or cri_sockets)`},
		{"unknown runtime", "containers:\n  runtimes: [docker, podman]\n", `c.yaml:2: containers.runtimes[1]: unknown runtime "podman" (want docker or cri)`},
		{"no runtime", "containers:\n  runtimes: []\n", `c.yaml:2: containers.runtimes: empty list; set names: false to ask no runtime`},
		{"runtime twice", "containers:\n  runtimes: [cri, cri]\n", `c.yaml:2: containers.runtimes[1]: "cri" listed twice`},
		{"sockets of a runtime left out", "containers:\n  runtimes: [docker]\n  cri_sockets: [/a.sock]\n", `c.yaml:3: containers.cri_sockets: sockets given for cri, which containers.runtimes leaves out`},
		{"left out after its sockets", "containers:\n  docker_sockets: [/a.sock]\n  runtimes: [cri]\n", `c.yaml:2: containers.docker_sockets: sockets given for docker, which containers.runtimes leaves out`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "c.yaml")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestValidateContainers(t *testing.T) {
	for _, socks := range [][]string{{"rel.sock"}, {""}, {"/a\x00b"}, {"/a", "/a"}} {
		c := Default()
		c.Containers.DockerSockets = socks
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "containers.docker_sockets: ") {
			t.Errorf("docker %q: %v", socks, err)
		}
		c = Default()
		c.Containers.CRISockets = socks
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "containers.cri_sockets: ") {
			t.Errorf("cri %q: %v", socks, err)
		}
	}
	c := Default()
	c.Containers.CRI = false
	c.Containers.CRISockets = []string{"/a.sock"}
	if err := c.Validate(); err == nil || err.Error() != "containers.cri_sockets: sockets given for cri, which containers.runtimes leaves out" {
		t.Errorf("sockets of a runtime that is off: %v", err)
	}
	c.Containers.CRISockets = nil
	if err := c.Validate(); err != nil {
		t.Errorf("docker only: %v", err)
	}
}
