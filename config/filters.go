package config

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Filters selects the sockets connlogd reports, beyond the protocols,
// families and states above. Package filter applies it; docs/filters.md
// says what runs in the kernel and what in connlogd.
type Filters struct {
	// Include: when not empty, a socket is reported only if it matches at
	// least one of these rules.
	Include []FilterRule
	// Exclude: a socket that matches any of these rules is not reported.
	Exclude []FilterRule
}

// IsZero reports whether no rule is set: every socket is reported.
func (f *Filters) IsZero() bool { return len(f.Include) == 0 && len(f.Exclude) == 0 }

// FilterRule matches a socket when every condition it sets holds. A list
// condition holds when any of its items does. A rule sets at least one
// condition.
type FilterRule struct {
	Ports       []PortRange // the local or the remote port
	LocalPorts  []PortRange
	RemotePorts []PortRange
	// CIDRs: the local or the remote address. An IPv4 prefix also matches
	// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d), as the kernel does.
	CIDRs       []netip.Prefix
	LocalCIDRs  []netip.Prefix
	RemoteCIDRs []netip.Prefix
	// Loopback, when set, requires that the local or the remote address
	// is (true) or that neither is (false) a loopback address.
	Loopback *bool
	// Process: the owning process's name; User: its user, by name or
	// numeric uid. Both need socket attribution.
	Process []string
	User    []string
}

// PortRange is an inclusive range of ports; one port has Lo == Hi.
type PortRange struct {
	Lo, Hi uint16
}

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + "-" + strconv.Itoa(int(r.Hi))
}

// filterRuleKeys lists a rule's keys, in the order messages name them.
var filterRuleKeys = []string{"ports", "local_ports", "remote_ports", "cidrs", "local_cidrs", "remote_cidrs", "loopback", "process", "user"}

// Validate checks filters built in code by the rules the parser applies.
func (f *Filters) Validate() error {
	for _, list := range []struct {
		name  string
		rules []FilterRule
	}{{"include", f.Include}, {"exclude", f.Exclude}} {
		for i := range list.rules {
			if err := list.rules[i].validate(); err != nil {
				return fmt.Errorf("%s[%d]: %w", list.name, i, err)
			}
		}
	}
	return nil
}

func (r *FilterRule) validate() error {
	if r.isEmpty() {
		return errors.New(emptyRule)
	}
	for _, ports := range []struct {
		key    string
		ranges []PortRange
	}{{"ports", r.Ports}, {"local_ports", r.LocalPorts}, {"remote_ports", r.RemotePorts}} {
		for i, pr := range ports.ranges {
			if pr.Lo > pr.Hi {
				return fmt.Errorf("%s[%d]: range %d-%d is backwards", ports.key, i, pr.Lo, pr.Hi)
			}
		}
	}
	for _, cidrs := range []struct {
		key      string
		prefixes []netip.Prefix
	}{{"cidrs", r.CIDRs}, {"local_cidrs", r.LocalCIDRs}, {"remote_cidrs", r.RemoteCIDRs}} {
		for i, p := range cidrs.prefixes {
			if err := checkPrefix(p); err != nil {
				return fmt.Errorf("%s[%d]: %w", cidrs.key, i, err)
			}
		}
	}
	for i, name := range r.Process {
		if name == "" {
			return fmt.Errorf("process[%d]: must not be empty", i)
		}
	}
	for i, name := range r.User {
		if err := checkUser(name); err != nil {
			return fmt.Errorf("user[%d]: %w", i, err)
		}
	}
	return nil
}

func (r *FilterRule) isEmpty() bool {
	return len(r.Ports) == 0 && len(r.LocalPorts) == 0 && len(r.RemotePorts) == 0 &&
		len(r.CIDRs) == 0 && len(r.LocalCIDRs) == 0 && len(r.RemoteCIDRs) == 0 &&
		r.Loopback == nil && len(r.Process) == 0 && len(r.User) == 0
}

// emptyRule is the message for a rule without conditions: as an include it
// would match everything, as an exclude it would silence connlogd.
const emptyRule = "empty rule; set at least one of ports, local_ports, remote_ports, cidrs, local_cidrs, remote_cidrs, loopback, process, user"

// checkPrefix refuses bits past the prefix length, which are most likely
// a typo for another network. (A netip.Prefix never has a zone.)
func checkPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("invalid prefix")
	case p != p.Masked():
		return fmt.Errorf("%s has bits set past the prefix length (did you mean %s?)", p, p.Masked())
	}
	return nil
}

func checkUser(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if isDigits(name) {
		if _, err := strconv.ParseUint(name, 10, 32); err != nil {
			return fmt.Errorf("uid %s is out of range", name)
		}
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parsePortRange reads "80" or "8000-8100".
func parsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	port := func(t string) (uint16, bool) {
		if !isDigits(t) {
			return 0, false
		}
		n, err := strconv.ParseUint(t, 10, 16)
		return uint16(n), err == nil
	}
	a, okA := port(lo)
	b, okB := a, okA
	if isRange {
		b, okB = port(hi)
	}
	if !okA || !okB {
		return PortRange{}, fmt.Errorf("%q is not a port (0-65535) or a range like 8000-8100", s)
	}
	if a > b {
		return PortRange{}, fmt.Errorf("range %q is backwards", s)
	}
	return PortRange{Lo: a, Hi: b}, nil
}

// parsePrefix reads a CIDR prefix, or an address as a one-address prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("%q is not a CIDR prefix like 10.0.0.0/8 or fd00::/8", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an IP address or a CIDR prefix", s)
		}
		if a.Zone() != "" {
			return p, fmt.Errorf("%q: zones are not supported", s) // the socket table has none
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return p, checkPrefix(p)
}

func (p *parser) filters(n *yaml.Node) (Filters, error) {
	var f Filters
	if n.Kind != yaml.MappingNode {
		return f, p.errorf(n.Line, "filters", "want a mapping with include and exclude, not a %s", kindName(n))
	}
	err := p.fields(n, "filters", func(key string, k, v *yaml.Node) error {
		path := "filters." + key
		var rules *[]FilterRule
		switch key {
		case "include":
			rules = &f.Include
		case "exclude":
			rules = &f.Exclude
		default:
			return p.errorf(k.Line, "filters", "unknown key %q (want include or exclude)", key)
		}
		items, err := p.list(v, path, "leave the key out for no "+key+" rules")
		if err != nil {
			return err
		}
		for i, it := range items {
			r, err := p.filterRule(it, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return err
			}
			*rules = append(*rules, r)
		}
		return nil
	})
	return f, err
}

func (p *parser) filterRule(n *yaml.Node, path string) (FilterRule, error) {
	var r FilterRule
	switch {
	case isNull(n):
		return r, p.errorf(n.Line, path, "%s", emptyRule)
	case n.Kind != yaml.MappingNode:
		return r, p.errorf(n.Line, path, "want a mapping of conditions such as \"local_ports: [22]\", not a %s", kindName(n))
	case len(n.Content) == 0:
		return r, p.errorf(n.Line, path, "%s", emptyRule)
	}
	err := p.fields(n, path, func(key string, k, v *yaml.Node) error {
		kpath := path + "." + key
		var err error
		switch key {
		case "ports":
			r.Ports, err = filterList(p, v, kpath, parsePortRange)
		case "local_ports":
			r.LocalPorts, err = filterList(p, v, kpath, parsePortRange)
		case "remote_ports":
			r.RemotePorts, err = filterList(p, v, kpath, parsePortRange)
		case "cidrs":
			r.CIDRs, err = filterList(p, v, kpath, parsePrefix)
		case "local_cidrs":
			r.LocalCIDRs, err = filterList(p, v, kpath, parsePrefix)
		case "remote_cidrs":
			r.RemoteCIDRs, err = filterList(p, v, kpath, parsePrefix)
		case "process":
			r.Process, err = filterList(p, v, kpath, func(s string) (string, error) {
				if s == "" {
					return "", errors.New("must not be empty")
				}
				return s, nil
			})
		case "user":
			r.User, err = filterList(p, v, kpath, func(s string) (string, error) { return s, checkUser(s) })
		case "loopback":
			var s string
			if s, err = p.scalar(v, kpath); err != nil {
				return err
			}
			switch s {
			case "true", "false":
				b := s == "true"
				r.Loopback = &b
			default:
				return p.errorf(v.Line, kpath, "%q is not true or false", s)
			}
		default:
			return p.errorf(k.Line, path, "unknown key %q (want %s)", key, strings.Join(filterRuleKeys, ", "))
		}
		return err
	})
	return r, err
}

// filterList parses a non-empty list of distinct items with parse.
func filterList[T comparable](p *parser, n *yaml.Node, path string, parse func(string) (T, error)) ([]T, error) {
	items, err := p.list(n, path, "leave the key out to not filter on it")
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(items))
	for i, it := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.scalar(it, ipath)
		if err != nil {
			return nil, err
		}
		v, err := parse(s)
		if err != nil {
			return nil, p.errorf(it.Line, ipath, "%w", err)
		}
		if j := slices.Index(out, v); j >= 0 {
			return nil, p.errorf(it.Line, ipath, "%q listed twice (first as %s[%d])", s, path, j)
		}
		out = append(out, v)
	}
	return out, nil
}
