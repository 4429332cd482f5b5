package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Namespace modes.
const (
	NamespacesHost = "host" // the daemon's own network namespace (default)
	NamespacesAll  = "all"  // every namespace on the host
)

// Daemon-wide defaults.
const (
	DefaultNamespaceRescan = 5 * time.Second
	MinNamespaceRescan     = 100 * time.Millisecond
)

// Namespaces says which network namespaces to watch.
type Namespaces struct {
	// Mode is NamespacesHost, NamespacesAll, or "" when List is used.
	Mode string
	// List names namespaces: /run/netns names or paths to nsfs files
	// (/proc/PID/ns/net). The host is watched only if listed as "host".
	List []string
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is host:port; empty (the default) disables metrics. See
	// Network for which families an address listens on.
	Listen string
}

// Network returns the network to listen on for Listen, so that the
// endpoint listens on what was asked and no more: "tcp4" for an IPv4
// literal (0.0.0.0:P is every IPv4 address, not IPv6 too), "tcp6" for an
// IPv6 literal ([::]:P is IPv6 only: the socket is opened with
// IPV6_V6ONLY, so it takes no v4-mapped connections), and "tcp" for an
// empty host (:P, both families) or a name (Go listens on the first
// address the name resolves to).
func (m Metrics) Network() string {
	host, _, err := net.SplitHostPort(m.Listen)
	if err != nil {
		return "tcp"
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() {
			return "tcp4"
		}
		return "tcp6"
	}
	return "tcp"
}

// checkListen checks a listen address: empty, or host:port whose port is
// a number from 0 to 65535 or a known service name.
func checkListen(s string) error {
	if s == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", s)
	}
	if err := checkPort("tcp", port, true); err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	return nil
}

// daemonKey parses the daemon-wide keys: namespaces, namespace_rescan,
// metrics and state_file.
func (p *parser) daemonKey(c *Config, key string, v *yaml.Node) error {
	switch key {
	case "namespaces":
		if v.Kind == yaml.ScalarNode {
			s, err := p.scalar(v, key)
			if err != nil {
				return err
			}
			if s != NamespacesHost && s != NamespacesAll {
				return p.errorf(v.Line, key, "%q is not host, all or a list of namespaces", s)
			}
			c.Namespaces = Namespaces{Mode: s}
			return nil
		}
		items, err := p.list(v, key, "use host (the default), all, or name namespaces")
		if err != nil {
			return err
		}
		ns := Namespaces{}
		seen := map[string]int{}
		for i, it := range items {
			s, err := p.scalar(it, key)
			if err != nil {
				return err
			}
			if s == "" || strings.ContainsRune(s, 0) || (!filepath.IsAbs(s) && strings.Contains(s, "/")) {
				return p.errorf(it.Line, key, "%q is neither a namespace name nor an absolute path", s)
			}
			if j, dup := seen[s]; dup {
				return p.errorf(it.Line, key, "%q listed twice (first as namespaces[%d])", s, j)
			}
			seen[s] = i
			ns.List = append(ns.List, s)
		}
		c.Namespaces = ns
	case "namespace_rescan":
		s, err := p.scalar(v, key)
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < MinNamespaceRescan {
			return p.errorf(v.Line, key, "%q is not a duration of at least %s", s, MinNamespaceRescan)
		}
		c.NamespaceRescan = d
	case "metrics":
		if v.Kind != yaml.MappingNode {
			return p.errorf(v.Line, key, "want a mapping with listen, not a %s", kindName(v))
		}
		return p.fields(v, key, func(k string, kn, vn *yaml.Node) error {
			if k != "listen" {
				return p.errorf(kn.Line, key, "unknown key %q (want listen)", k)
			}
			s, err := p.scalar(vn, "metrics.listen")
			if err != nil {
				return err
			}
			if err := checkListen(s); err != nil {
				return p.errorf(vn.Line, "metrics.listen", "%w", err)
			}
			c.Metrics.Listen = s
			return nil
		})
	case "state_file":
		s, err := p.scalar(v, key)
		if err != nil {
			return err
		}
		if s != "" && !filepath.IsAbs(s) {
			return p.errorf(v.Line, key, "%q is not an absolute path", s)
		}
		c.StateFile = s
	}
	return nil
}
