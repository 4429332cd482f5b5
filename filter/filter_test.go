package filter

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/snapshot"
)

// sock returns a TCP socket from local to remote ("10.0.0.1:80",
// "[::1]:22"); its family follows the addresses' form, so an IPv4-mapped
// address makes an IPv6 socket, as the kernel reports it.
func sock(localAP, remoteAP string) *snapshot.Socket {
	src, dst := netip.MustParseAddrPort(localAP), netip.MustParseAddrPort(remoteAP)
	fam := snapshot.FamilyIPv4
	if src.Addr().Is6() {
		fam = snapshot.FamilyIPv6
	}
	return &snapshot.Socket{Key: snapshot.Key{Proto: snapshot.ProtoTCP, Family: fam, Src: src, Dst: dst, Cookie: 1}}
}

// parse builds Filters from the YAML of a filters section, through the
// configuration parser, so that tests read as users write.
func parse(t *testing.T, yaml string) config.Filters {
	t.Helper()
	c, err := config.Parse([]byte("filters:\n"+yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c.Filters
}

func mustNew(t *testing.T, fs config.Filters) *Filter {
	t.Helper()
	f, err := New(fs)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type sockCase struct {
	local, remote string
	want          bool
}

// TestMatch has one case per filter kind; each lists sockets that must
// and must not match. Every case also checks that the kernel program, as
// the model runs it, decides as Match does.
func TestMatch(t *testing.T) {
	tests := []struct {
		name    string
		filters string // YAML under "filters:"
		socks   []sockCase
	}{
		{"ports: either side", "  include:\n    - ports: [\"22\"]\n", []sockCase{
			{"10.0.0.1:22", "0.0.0.0:0", true},
			{"10.0.0.1:40000", "10.0.0.2:22", true},
			{"10.0.0.1:40000", "10.0.0.2:23", false},
			{"[::1]:22", "[::]:0", true},
		}},
		{"port range bounds", "  include:\n    - local_ports: [8000-8100]\n", []sockCase{
			{"10.0.0.1:7999", "0.0.0.0:0", false},
			{"10.0.0.1:8000", "0.0.0.0:0", true},
			{"10.0.0.1:8100", "0.0.0.0:0", true},
			{"10.0.0.1:8101", "0.0.0.0:0", false},
			{"10.0.0.1:1", "10.0.0.2:8050", false}, // remote side does not count
		}},
		{"several ports and ranges", "  include:\n    - local_ports: [22, 80, 8000-8100, 65535]\n", []sockCase{
			{"10.0.0.1:22", "0.0.0.0:0", true},
			{"10.0.0.1:80", "0.0.0.0:0", true},
			{"10.0.0.1:81", "0.0.0.0:0", false},
			{"10.0.0.1:8050", "0.0.0.0:0", true},
			{"10.0.0.1:65535", "0.0.0.0:0", true},
			{"10.0.0.1:65534", "0.0.0.0:0", false},
		}},
		{"remote ports: zero is unconnected", "  include:\n    - remote_ports: [\"0\"]\n", []sockCase{
			{"10.0.0.1:53", "0.0.0.0:0", true},
			{"10.0.0.1:53", "10.0.0.2:53", false},
		}},
		{"remote ports", "  exclude:\n    - remote_ports: [443]\n", []sockCase{
			{"10.0.0.1:40000", "10.0.0.2:443", false},
			{"10.0.0.1:443", "10.0.0.2:40000", true},
		}},
		{"cidrs: either side", "  include:\n    - cidrs: [10.1.0.0/16]\n", []sockCase{
			{"10.1.2.3:22", "0.0.0.0:0", true},
			{"192.168.0.1:40000", "10.1.9.9:22", true},
			{"192.168.0.1:40000", "10.2.0.1:22", false},
		}},
		{"IPv4 cidr matches IPv4-mapped IPv6", "  include:\n    - local_cidrs: [10.1.0.0/16]\n", []sockCase{
			{"[::ffff:10.1.2.3]:22", "[::ffff:192.168.0.1]:4000", true},
			{"[::ffff:10.2.2.3]:22", "[::ffff:192.168.0.1]:4000", false},
			{"[2001:db8::1]:22", "[::]:0", false},
		}},
		{"IPv6 cidr", "  include:\n    - remote_cidrs: [\"fd00::/8\"]\n", []sockCase{
			{"[fd00::1]:40000", "[fd12::2]:443", true},
			{"[fd00::1]:40000", "[2001:db8::2]:443", false},
			{"10.0.0.1:40000", "10.0.0.2:443", false},
		}},
		{"single address", "  include:\n    - local_cidrs: [10.0.0.1, \"::1\"]\n", []sockCase{
			{"10.0.0.1:1", "0.0.0.0:0", true},
			{"10.0.0.2:1", "0.0.0.0:0", false},
			{"[::1]:1", "[::]:0", true},
		}},
		{"zero-length prefixes", "  include:\n    - local_cidrs: [0.0.0.0/0]\n", []sockCase{
			{"10.0.0.1:1", "0.0.0.0:0", true},
			{"[::ffff:10.0.0.1]:1", "[::]:0", true}, // mapped: IPv4 as the kernel sees it
			{"[2001:db8::1]:1", "[::]:0", false},
		}},
		{"loopback true", "  include:\n    - loopback: true\n", []sockCase{
			{"127.0.0.1:631", "0.0.0.0:0", true},
			{"127.8.9.10:53", "0.0.0.0:0", true},
			{"[::1]:631", "[::]:0", true},
			{"[::ffff:127.0.0.1]:631", "[::ffff:127.0.0.1]:5000", true},
			{"10.0.0.1:40000", "127.0.0.1:22", true}, // either side
			{"0.0.0.0:22", "0.0.0.0:0", false},
			{"[::]:22", "[::]:0", false},
			{"10.0.0.1:22", "10.0.0.2:40000", false},
		}},
		{"loopback false", "  include:\n    - loopback: false\n", []sockCase{
			{"127.0.0.1:631", "0.0.0.0:0", false},
			{"[::1]:631", "[::]:0", false},
			{"[::ffff:127.0.0.1]:631", "[::]:0", false},
			{"0.0.0.0:22", "0.0.0.0:0", true},
			{"10.0.0.1:22", "10.0.0.2:40000", true},
		}},
		{"conditions of a rule all hold", "  include:\n    - local_ports: [22]\n      remote_cidrs: [10.0.0.0/8]\n", []sockCase{
			{"192.168.0.1:22", "10.5.5.5:40000", true},
			{"192.168.0.1:22", "192.168.0.2:40000", false},
			{"192.168.0.1:23", "10.5.5.5:40000", false},
		}},
		{"any include rule", "  include:\n    - local_ports: [22]\n    - remote_cidrs: [10.0.0.0/8]\n", []sockCase{
			{"192.168.0.1:22", "192.168.0.2:40000", true},
			{"192.168.0.1:23", "10.5.5.5:40000", true},
			{"192.168.0.1:23", "192.168.0.2:40000", false},
		}},
		{"exclude wins over include", "  include:\n    - local_ports: [1-1024]\n  exclude:\n    - loopback: true\n    - local_ports: [53]\n", []sockCase{
			{"10.0.0.1:22", "0.0.0.0:0", true},
			{"127.0.0.1:22", "0.0.0.0:0", false},
			{"10.0.0.1:53", "0.0.0.0:0", false},
			{"10.0.0.1:2000", "0.0.0.0:0", false},
		}},
		{"exclude a conjunction", "  exclude:\n    - remote_cidrs: [10.0.0.0/8]\n      remote_ports: [53]\n", []sockCase{
			{"10.0.0.1:40000", "10.0.0.2:53", false},
			{"10.0.0.1:40000", "10.0.0.2:54", true},
			{"10.0.0.1:40000", "192.168.0.2:53", true},
		}},
		// Owner conditions cannot be decided from the socket: Match
		// reports what they might let through (see TestMatchOwner).
		{"process in an include rule", "  include:\n    - process: [nginx]\n      local_ports: [80]\n", []sockCase{
			{"10.0.0.1:80", "10.0.0.2:40000", true},
			{"10.0.0.1:81", "10.0.0.2:40000", false},
		}},
		{"user in an exclude rule", "  exclude:\n    - user: [root]\n      local_ports: [80]\n", []sockCase{
			{"10.0.0.1:80", "10.0.0.2:40000", true},
		}},
		{"process alone in an include", "  include:\n    - process: [nginx]\n    - local_ports: [80]\n", []sockCase{
			{"10.0.0.1:81", "10.0.0.2:40000", true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustNew(t, parse(t, tt.filters))
			for _, c := range tt.socks {
				s := sock(c.local, c.remote)
				if got := f.Match(s); got != c.want {
					t.Errorf("Match(%s -> %s) = %v, want %v", c.local, c.remote, got, c.want)
				}
				checkKernelAgrees(t, f, s)
			}
		})
	}
}

// checkKernelAgrees runs the family's program on s with the kernel model
// and compares the verdict with Match.
func checkKernelAgrees(t *testing.T, f *Filter, s *snapshot.Socket) {
	t.Helper()
	bc, ok := f.Bytecode(s.Family)
	if !ok {
		if !f.Match(s) {
			t.Errorf("%v: no program for %v, but Match rejects the socket", s.Key, s.Family)
		}
		return
	}
	if err := audit(bc); err != nil {
		t.Fatalf("program for %v fails the audit: %v\n%s", s.Family, err, dis(bc))
	}
	if got, want := run(bc, s), f.Match(s); got != want {
		t.Errorf("%v: kernel program says %v, Match says %v\n%s", s.Key, got, want, dis(bc))
	}
}

func TestNoFilter(t *testing.T) {
	for name, f := range map[string]*Filter{"nil": nil, "zero": mustNew(t, config.Filters{})} {
		s := sock("10.0.0.1:1", "10.0.0.2:2")
		if !f.Match(s) || !f.MatchOwner(s, nil) || !f.MatchOwner(s, &Owner{Process: "x"}) {
			t.Errorf("%s filter rejects a socket", name)
		}
		if f.NeedsOwner() {
			t.Errorf("%s filter needs owners", name)
		}
		for _, fam := range []snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6} {
			if bc, ok := f.Bytecode(fam); ok || bc != nil {
				t.Errorf("%s filter: Bytecode(%v) = %x, %v; want none", name, fam, bc, ok)
			}
		}
	}
}

func TestMatchOwner(t *testing.T) {
	s := sock("10.0.0.1:80", "10.0.0.2:40000")
	other := sock("10.0.0.1:81", "10.0.0.2:40000")
	nginx := &Owner{Process: "nginx", User: "www-data", UID: 33, HasUID: true}
	sshd := &Owner{Process: "sshd", User: "root", UID: 0, HasUID: true}
	uidOnly := &Owner{Process: "sshd", UID: 0, HasUID: true}
	nameless := &Owner{User: "root"}
	tests := []struct {
		name    string
		filters string
		sock    *snapshot.Socket
		owner   *Owner
		want    bool
	}{
		{"include process: match", "  include:\n    - process: [nginx, apache2]\n", s, nginx, true},
		{"include process: other", "  include:\n    - process: [nginx, apache2]\n", s, sshd, false},
		{"include process: owner unknown", "  include:\n    - process: [nginx]\n", s, nil, true},
		{"include process: name unknown", "  include:\n    - process: [nginx]\n", s, nameless, true},
		{"include process and port: port fails", "  include:\n    - process: [nginx]\n      local_ports: [80]\n", other, nginx, false},
		{"exclude process: match", "  exclude:\n    - process: [nginx]\n", s, nginx, false},
		{"exclude process: other", "  exclude:\n    - process: [nginx]\n", s, sshd, true},
		{"exclude process: owner unknown", "  exclude:\n    - process: [nginx]\n", s, nil, true},
		{"exclude process and port: port fails", "  exclude:\n    - process: [nginx]\n      local_ports: [80]\n", other, nginx, true},
		{"include user by name", "  include:\n    - user: [www-data]\n", s, nginx, true},
		{"include user by name: other", "  include:\n    - user: [www-data]\n", s, sshd, false},
		{"include user by uid", "  include:\n    - user: [\"33\"]\n", s, nginx, true},
		{"include user by uid: other", "  include:\n    - user: [\"33\"]\n", s, sshd, false},
		{"exclude user by uid", "  exclude:\n    - user: [\"0\"]\n", s, uidOnly, false},
		{"exclude user by name, only uid known", "  exclude:\n    - user: [root]\n", s, uidOnly, true},
		{"include user by name, only uid known", "  include:\n    - user: [root]\n", s, uidOnly, true},
		{"include user by name or uid, uid matches", "  include:\n    - user: [www-data, \"0\"]\n", s, uidOnly, true},
		{"include user by name or uid, both known, neither", "  include:\n    - user: [www-data, \"1000\"]\n", s, sshd, false},
		{"process and user", "  include:\n    - process: [sshd]\n      user: [root]\n", s, sshd, true},
		{"process and user: user fails", "  include:\n    - process: [sshd]\n      user: [www-data]\n", s, sshd, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustNew(t, parse(t, tt.filters))
			if !f.NeedsOwner() {
				t.Error("NeedsOwner = false with owner conditions")
			}
			if got := f.MatchOwner(tt.sock, tt.owner); got != tt.want {
				t.Errorf("MatchOwner = %v, want %v", got, tt.want)
			}
			// Match is never narrower than MatchOwner, and is what
			// MatchOwner says when nothing is known of the owner.
			if tt.want && !f.Match(tt.sock) {
				t.Error("MatchOwner accepts a socket Match rejects")
			}
			if f.Match(tt.sock) != f.MatchOwner(tt.sock, nil) {
				t.Error("Match differs from MatchOwner with an unknown owner")
			}
		})
	}
	if mustNew(t, parse(t, "  include:\n    - local_ports: [1]\n")).NeedsOwner() {
		t.Error("NeedsOwner = true without owner conditions")
	}
}

func TestNewRefusesInvalidRules(t *testing.T) {
	tests := []struct {
		name string
		fs   config.Filters
		want string
	}{
		{"empty rule", config.Filters{Include: []config.FilterRule{{}}}, "include[0]: empty rule"},
		{"backwards range", config.Filters{Exclude: []config.FilterRule{{LocalPorts: []config.PortRange{{Lo: 9, Hi: 1}}}}}, "exclude[0]: local_ports[0]: range 9-1 is backwards"},
		{"host bits", config.Filters{Include: []config.FilterRule{{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}}}, "did you mean 10.0.0.0/8"},
		{"zero prefix", config.Filters{Include: []config.FilterRule{{CIDRs: []netip.Prefix{{}}}}}, "cidrs[0]: invalid prefix"},
		{"empty process", config.Filters{Include: []config.FilterRule{{Process: []string{""}}}}, "process[0]: must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := New(tt.fs)
			if f != nil || err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "filter: ") {
				t.Errorf("New = %v, %v; want an error containing %q", f, err, tt.want)
			}
		})
	}
}

// BenchmarkMatch: the per-socket cost Match adds to a poll, with a filter
// of a typical size.
func BenchmarkMatch(b *testing.B) {
	c, err := config.Parse([]byte("filters:\n  include:\n    - local_ports: [22, 80, 443, 8000-8100]\n    - remote_cidrs: [10.0.0.0/8, \"fd00::/8\"]\n  exclude:\n    - loopback: true\n"), "b.yaml")
	if err != nil {
		b.Fatal(err)
	}
	f, err := New(c.Filters)
	if err != nil {
		b.Fatal(err)
	}
	socks := []*snapshot.Socket{
		sock("10.0.0.1:443", "192.168.1.9:40000"),
		sock("192.168.0.1:40000", "10.1.2.3:5432"),
		sock("192.168.0.1:40000", "192.168.0.2:5432"),
		sock("[2001:db8::1]:40000", "[2001:db8::2]:5432"),
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f.Match(socks[i%len(socks)])
	}
}
