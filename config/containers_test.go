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
		{"absent: names from the default sockets", "interval: 1s\n", Containers{Names: true}},
		{"off", "containers:\n  names: false\n", Containers{Names: false}},
		{"other sockets", "containers:\n  docker_sockets: [/srv/docker.sock, /run/user/1000/docker.sock]\n",
			Containers{Names: true, DockerSockets: []string{"/srv/docker.sock", "/run/user/1000/docker.sock"}}},
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
		{"not a mapping", "containers: true\n", `c.yaml:1: containers: want a mapping with names and docker_sockets, not a single value`},
		{"bad bool", "containers:\n  names: yes\n", `c.yaml:2: containers.names: "yes" is not true or false`},
		{"relative socket", "containers:\n  docker_sockets: [docker.sock]\n", `c.yaml:2: containers.docker_sockets: "docker.sock" is not an absolute path`},
		{"empty list", "containers:\n  docker_sockets: []\n", `empty list; leave the key out for docker's default sockets`},
		{"duplicate", "containers:\n  docker_sockets:\n    - /a.sock\n    - /a.sock\n", `c.yaml:4: containers.docker_sockets: "/a.sock" listed twice (first as docker_sockets[0])`},
		{"unknown key", "containers:\n  cri_sockets: [/a]\n", `c.yaml:2: containers: unknown key "cri_sockets" (want names or docker_sockets)`},
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
			t.Errorf("%q: %v", socks, err)
		}
	}
}
