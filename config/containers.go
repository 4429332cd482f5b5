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
	// DockerSockets are the docker Engine API sockets to ask. Empty (the
	// default) means docker's default paths, which are asked quietly when
	// nothing listens there; a socket named here that cannot be reached
	// is warned about.
	DockerSockets []string
}

func defaultContainers() Containers { return Containers{Names: true} }

// validate checks a section built in code by the rules Parse applies.
func (c *Containers) validate() error {
	seen := map[string]bool{}
	for _, s := range c.DockerSockets {
		if err := checkSocketPath(s); err != nil {
			return fmt.Errorf("containers.docker_sockets: %w", err)
		}
		if seen[s] {
			return fmt.Errorf("containers.docker_sockets: %q listed twice", s)
		}
		seen[s] = true
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
	c := defaultContainers()
	if n.Kind != yaml.MappingNode {
		return c, p.errorf(n.Line, "containers", "want a mapping with names and docker_sockets, not a %s", kindName(n))
	}
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
		case "docker_sockets":
			items, err := p.list(v, path, "leave the key out for docker's default sockets")
			if err != nil {
				return err
			}
			seen := map[string]int{}
			for i, it := range items {
				s, err := p.scalar(it, path)
				if err != nil {
					return err
				}
				if err := checkSocketPath(s); err != nil {
					return p.errorf(it.Line, path, "%s", err)
				}
				if j, dup := seen[s]; dup {
					return p.errorf(it.Line, path, "%q listed twice (first as docker_sockets[%d])", s, j)
				}
				seen[s] = i
				c.DockerSockets = append(c.DockerSockets, s)
			}
		default:
			return p.errorf(k.Line, "containers", "unknown key %q (want names or docker_sockets)", key)
		}
		return nil
	})
	return c, err
}
