package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Containers says whether and where connlogd asks container runtimes
// for the name, image and pod of a socket's container (package
// containers).
type Containers struct {
	// Names asks the runtimes. Default true; false asks nothing, and
	// events carry the container id only.
	Names bool
	// Docker and CRI say which kinds of runtime are asked: docker's
	// Engine API, and the Kubernetes CRI (containerd, CRI-O). Both by
	// default; the runtimes key lists the ones wanted.
	Docker, CRI bool
	// DockerSockets are the docker Engine API sockets to ask. Empty (the
	// default) means docker's default paths, which are asked quietly when
	// nothing listens there; a socket named here that cannot be reached
	// is warned about.
	DockerSockets []string
	// CRISockets are the CRI sockets to ask, likewise; empty means
	// containerd's and CRI-O's default paths.
	CRISockets []string
}

func defaultContainers() Containers { return Containers{Names: true, Docker: true, CRI: true} }

// The runtimes key's values.
const (
	RuntimeDocker = "docker"
	RuntimeCRI    = "cri"
)

// validate checks a section built in code by the rules Parse applies.
func (c *Containers) validate() error {
	for _, l := range []struct {
		key     string
		on      bool
		runtime string
		socks   []string
	}{
		{"docker_sockets", c.Docker, RuntimeDocker, c.DockerSockets},
		{"cri_sockets", c.CRI, RuntimeCRI, c.CRISockets},
	} {
		if err := checkSockets(l.socks, l.on, l.runtime); err != nil {
			return fmt.Errorf("containers.%s: %w", l.key, err)
		}
		seen := map[string]bool{}
		for _, s := range l.socks {
			if seen[s] {
				return fmt.Errorf("containers.%s: %q listed twice", l.key, s)
			}
			seen[s] = true
		}
	}
	return nil
}

// checkSockets checks a list of sockets for a runtime that is on or off.
func checkSockets(socks []string, on bool, runtime string) error {
	if len(socks) > 0 && !on {
		return fmt.Errorf("sockets given for %s, which containers.runtimes leaves out", runtime)
	}
	for _, s := range socks {
		if err := checkSocketPath(s); err != nil {
			return err
		}
	}
	return nil
}

func checkSocketPath(s string) error {
	if s == "" || !filepath.IsAbs(s) || strings.ContainsRune(s, 0) {
		return fmt.Errorf("%q is not an absolute path", s)
	}
	return nil
}

// containers parses the containers section.
func (p *parser) containers(n *yaml.Node) (Containers, error) {
	const keys = "names, runtimes, docker_sockets or cri_sockets"
	c := defaultContainers()
	if n.Kind != yaml.MappingNode {
		return c, p.errorf(n.Line, "containers", "want a mapping with %s, not a %s", keys, kindName(n))
	}
	socketsLine := map[string]int{}
	err := p.fields(n, "containers", func(key string, k, v *yaml.Node) error {
		path := "containers." + key
		switch key {
		case "names":
			s, err := p.scalar(v, path)
			if err != nil {
				return err
			}
			switch s {
			case "true":
				c.Names = true
			case "false":
				c.Names = false
			default:
				return p.errorf(v.Line, path, "%q is not true or false", s)
			}
		case "runtimes":
			rts, err := names(p, v, path, "set names: false to ask no runtime", "runtime", "docker or cri",
				func(s string) (string, bool) { return s, s == RuntimeDocker || s == RuntimeCRI })
			if err != nil {
				return err
			}
			c.Docker, c.CRI = false, false
			for _, r := range rts {
				c.Docker = c.Docker || r == RuntimeDocker
				c.CRI = c.CRI || r == RuntimeCRI
			}
		case "docker_sockets", "cri_sockets":
			socks, err := p.sockets(v, path, key)
			if err != nil {
				return err
			}
			if key == "docker_sockets" {
				c.DockerSockets = socks
			} else {
				c.CRISockets = socks
			}
			socketsLine[key] = k.Line
		default:
			return p.errorf(k.Line, "containers", "unknown key %q (want %s)", key, keys)
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	// Runtimes may come after the sockets: checked once all is read.
	if err := checkSockets(c.DockerSockets, c.Docker, RuntimeDocker); err != nil {
		return c, p.errorf(socketsLine["docker_sockets"], "containers.docker_sockets", "%s", err)
	}
	if err := checkSockets(c.CRISockets, c.CRI, RuntimeCRI); err != nil {
		return c, p.errorf(socketsLine["cri_sockets"], "containers.cri_sockets", "%s", err)
	}
	return c, nil
}

// sockets parses a list of distinct absolute socket paths.
func (p *parser) sockets(v *yaml.Node, path, key string) ([]string, error) {
	items, err := p.list(v, path, "leave the key out for the runtime's default sockets")
	if err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]int{}
	for i, it := range items {
		s, err := p.scalar(it, path)
		if err != nil {
			return nil, err
		}
		if err := checkSocketPath(s); err != nil {
			return nil, p.errorf(it.Line, path, "%s", err)
		}
		if j, dup := seen[s]; dup {
			return nil, p.errorf(it.Line, path, "%q listed twice (first as %s[%d])", s, key, j)
		}
		seen[s] = i
		out = append(out, s)
	}
	return out, nil
}
