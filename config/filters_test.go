package config

import (
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseFilters(t *testing.T) {
	yes, no := true, false
	pfx := netip.MustParsePrefix
	tests := []struct {
		name string
		in   string
		want Filters
	}{
		{"empty section", "filters: {}\n", Filters{}},
		{"every key", `filters:
  include:
    - ports: [22, "8000-8100"]
      local_ports: ["0-1023"]
      remote_ports: [443, 65535]
      cidrs: [10.0.0.0/8, "fd00::/8"]
      local_cidrs: [192.168.1.7, "::1"]
      remote_cidrs: ["::ffff:10.0.0.0/104", 0.0.0.0/0]
      loopback: false
      process: [nginx, "php-fpm: pool www"]
      user: [www-data, "33"]
  exclude:
    - loopback: true
    - {remote_ports: [53], process: [systemd-resolve]}
`, Filters{
			Include: []FilterRule{{
				Ports:       []PortRange{{22, 22}, {8000, 8100}},
				LocalPorts:  []PortRange{{0, 1023}},
				RemotePorts: []PortRange{{443, 443}, {65535, 65535}},
				CIDRs:       []netip.Prefix{pfx("10.0.0.0/8"), pfx("fd00::/8")},
				LocalCIDRs:  []netip.Prefix{pfx("192.168.1.7/32"), pfx("::1/128")},
				RemoteCIDRs: []netip.Prefix{pfx("::ffff:10.0.0.0/104"), pfx("0.0.0.0/0")},
				Loopback:    &no,
				Process:     []string{"nginx", "php-fpm: pool www"},
				User:        []string{"www-data", "33"},
			}},
			Exclude: []FilterRule{
				{Loopback: &yes},
				{RemotePorts: []PortRange{{53, 53}}, Process: []string{"systemd-resolve"}},
			},
		}},
		{"only exclude", "filters:\n  exclude:\n    - local_ports: [\"9100\"]\n", Filters{
			Exclude: []FilterRule{{LocalPorts: []PortRange{{9100, 9100}}}},
		}},
		{"anchored rule reused", "filters:\n  include:\n    - &r {local_ports: [1]}\n  exclude:\n    - *r\n", Filters{
			Include: []FilterRule{{LocalPorts: []PortRange{{1, 1}}}},
			Exclude: []FilterRule{{LocalPorts: []PortRange{{1, 1}}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in), "config.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Filters, tt.want) {
				t.Errorf("filters:\ngot  %+v\nwant %+v", c.Filters, tt.want)
			}
			// The rest of the configuration keeps its defaults.
			rest := *c
			rest.Filters = Filters{}
			if !reflect.DeepEqual(&rest, Default()) {
				t.Errorf("a filters section changed other settings: %+v", rest)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate on a parsed config: %v", err)
			}
		})
	}
}

func TestParseFiltersErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line int
		want string
	}{
		{"not a mapping", "filters: [a]\n", 1, "filters: want a mapping with include and exclude, not a list"},
		{"null", "filters:\n", 1, "filters: want a mapping with include and exclude, not a single value"},
		{"unknown key", "filters:\n  include: [{ports: [1]}]\n  ignore: []\n", 3, `filters: unknown key "ignore" (want include or exclude)`},
		{"duplicate key", "filters:\n  include: [{ports: [1]}]\n  include: [{ports: [2]}]\n", 3, `filters: duplicate key "include" (first at line 2)`},
		{"include empty list", "filters:\n  include: []\n", 2, "filters.include: empty list; leave the key out for no include rules"},
		{"include not a list", "filters:\n  include:\n    ports: [1]\n", 3, "filters.include: want a list, not a mapping"},
		{"rule null", "filters:\n  exclude:\n    - {ports: [1]}\n    -\n", 4, "filters.exclude[1]: empty rule; set at least one of ports"},
		{"rule empty mapping", "filters:\n  exclude:\n    - {}\n", 3, "filters.exclude[0]: empty rule"},
		{"rule scalar", "filters:\n  include:\n    - port 22\n", 3, `filters.include[0]: want a mapping of conditions such as "local_ports: [22]", not a single value`},
		{"rule unknown key", "filters:\n  include:\n    - local_ports: [22]\n      local_port: [23]\n", 4,
			`filters.include[0]: unknown key "local_port" (want ports, local_ports, remote_ports, cidrs, local_cidrs, remote_cidrs, loopback, process, user)`},
		{"rule duplicate key", "filters:\n  include:\n    - ports: [1]\n      ports: [2]\n", 4, `filters.include[0]: duplicate key "ports" (first at line 3)`},

		{"ports not a list", "filters:\n  include:\n    - ports: 22\n", 3, "filters.include[0].ports: want a list, not a single value"},
		{"ports empty", "filters:\n  include:\n    - ports: []\n", 3, "filters.include[0].ports: empty list; leave the key out to not filter on it"},
		{"port word", "filters:\n  include:\n    - local_ports: [ssh]\n", 3, `filters.include[0].local_ports[0]: "ssh" is not a port (0-65535) or a range like 8000-8100`},
		{"port too big", "filters:\n  include:\n    - remote_ports:\n        - 22\n        - 65536\n", 5, `filters.include[0].remote_ports[1]: "65536" is not a port`},
		{"port negative", "filters:\n  include:\n    - ports: [-1]\n", 3, `"-1" is not a port`},
		{"port sign", "filters:\n  include:\n    - ports: [+1]\n", 3, `"+1" is not a port`},
		{"range open", "filters:\n  include:\n    - ports: [8000-]\n", 3, `"8000-" is not a port`},
		{"range of three", "filters:\n  include:\n    - ports: [1-2-3]\n", 3, `"1-2-3" is not a port`},
		{"range spaces", "filters:\n  include:\n    - ports: [8000 - 8100]\n", 3, `"8000 - 8100" is not a port`},
		{"range backwards", "filters:\n  include:\n    - ports: [8100-8000]\n", 3, `filters.include[0].ports[0]: range "8100-8000" is backwards`},
		{"port listed twice", "filters:\n  include:\n    - ports: [80, \"80-80\"]\n", 3, `filters.include[0].ports[1]: "80-80" listed twice (first as filters.include[0].ports[0])`},
		{"port null", "filters:\n  include:\n    - ports: [~]\n", 3, "filters.include[0].ports[0]: missing value"},
		{"port list", "filters:\n  include:\n    - ports: [[1]]\n", 3, "filters.include[0].ports[0]: want a single value, not a list"},

		{"cidr garbage", "filters:\n  exclude:\n    - cidrs: [10.0.0.0/33]\n", 3, `filters.exclude[0].cidrs[0]: "10.0.0.0/33" is not a CIDR prefix like 10.0.0.0/8 or fd00::/8`},
		{"cidr host bits", "filters:\n  exclude:\n    - local_cidrs: [10.1.2.3/8]\n", 3, "filters.exclude[0].local_cidrs[0]: 10.1.2.3/8 has bits set past the prefix length (did you mean 10.0.0.0/8?)"},
		{"cidr v6 host bits", "filters:\n  exclude:\n    - remote_cidrs: [\"fd00::1/8\"]\n", 3, "did you mean fd00::/8?"},
		{"address garbage", "filters:\n  exclude:\n    - cidrs: [localhost]\n", 3, `"localhost" is not an IP address or a CIDR prefix`},
		{"address zone", "filters:\n  exclude:\n    - cidrs: [\"fe80::1%eth0\"]\n", 3, `"fe80::1%eth0": zones are not supported`},
		{"prefix zone", "filters:\n  exclude:\n    - cidrs: [\"fe80::%eth0/64\"]\n", 3, "is not a CIDR prefix"},
		{"cidr listed twice", "filters:\n  exclude:\n    - cidrs: [10.0.0.1, 10.0.0.1/32]\n", 3, `"10.0.0.1/32" listed twice`},

		{"loopback not a bool", "filters:\n  exclude:\n    - loopback: yes\n", 3, `filters.exclude[0].loopback: "yes" is not true or false`},
		{"loopback list", "filters:\n  exclude:\n    - loopback: [true]\n", 3, "filters.exclude[0].loopback: want a single value, not a list"},
		{"process empty", "filters:\n  exclude:\n    - process: [\"\"]\n", 3, "filters.exclude[0].process[0]: must not be empty"},
		{"process not a list", "filters:\n  exclude:\n    - process: nginx\n", 3, "filters.exclude[0].process: want a list, not a single value"},
		{"process twice", "filters:\n  exclude:\n    - process: [a, b, a]\n", 3, `filters.exclude[0].process[2]: "a" listed twice`},
		{"user empty", "filters:\n  exclude:\n    - user: [\"\"]\n", 3, "filters.exclude[0].user[0]: must not be empty"},
		{"uid too big", "filters:\n  exclude:\n    - user: [\"4294967296\"]\n", 3, "filters.exclude[0].user[0]: uid 4294967296 is out of range"},
		{"tagged value", "filters:\n  exclude:\n    - user: [!env USER]\n", 3, "filters.exclude[0].user[0]: YAML tag !env is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in), "config.yaml")
			if c != nil {
				t.Errorf("got a config with the error: %+v", c)
			}
			checkErr(t, err, "config.yaml", tt.line, tt.want)
		})
	}
}

func TestValidateFilters(t *testing.T) {
	yes := true
	tests := []struct {
		name string
		f    Filters
		want string // "" for valid
	}{
		{"none", Filters{}, ""},
		{"valid", Filters{Include: []FilterRule{{LocalPorts: []PortRange{{1, 2}}, Loopback: &yes, User: []string{"0", "root"}}}}, ""},
		{"empty rule", Filters{Exclude: []FilterRule{{}, {}}}, "filters: exclude[0]: empty rule"},
		{"backwards range", Filters{Include: []FilterRule{{Ports: []PortRange{{2, 1}}}}}, "filters: include[0]: ports[0]: range 2-1 is backwards"},
		{"invalid prefix", Filters{Include: []FilterRule{{RemoteCIDRs: []netip.Prefix{{}}}}}, "filters: include[0]: remote_cidrs[0]: invalid prefix"},
		{"host bits", Filters{Include: []FilterRule{{LocalCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}}}}, "local_cidrs[0]: 10.0.0.1/24 has bits set"},
		{"empty process", Filters{Include: []FilterRule{{Process: []string{""}}}}, "include[0]: process[0]: must not be empty"},
		{"uid out of range", Filters{Include: []FilterRule{{User: []string{"99999999999"}}}}, "include[0]: user[0]: uid 99999999999 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Filters = tt.f
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v; want nil", err)
			case tt.want == "":
			case err == nil || !strings.Contains(err.Error(), tt.want):
				t.Errorf("Validate() = %v; want …%s…", err, tt.want)
			}
		})
	}
}

func TestPortRangeString(t *testing.T) {
	if s := (PortRange{Lo: 80, Hi: 80}).String(); s != "80" {
		t.Errorf("one port: %q", s)
	}
	if s := (PortRange{Lo: 8000, Hi: 8100}).String(); s != "8000-8100" {
		t.Errorf("range: %q", s)
	}
}

// TestExampleFilters checks that the filters section of
// config.example.yaml, commented out there, is valid once uncommented.
func TestExampleFilters(t *testing.T) {
	data, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var section []string
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		if l == "# filters:" {
			in = true
		} else if in && !strings.HasPrefix(l, "#   ") {
			break
		}
		if in {
			section = append(section, strings.TrimPrefix(l, "# "))
		}
	}
	if len(section) < 2 {
		t.Fatal("config.example.yaml has no commented-out filters section")
	}
	c, err := Parse([]byte(strings.Join(section, "\n")), "uncommented example")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Filters.Include) == 0 || len(c.Filters.Exclude) == 0 {
		t.Errorf("example filters: %+v; want include and exclude rules", c.Filters)
	}
}
