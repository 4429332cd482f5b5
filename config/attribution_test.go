package config

import (
	"strings"
	"testing"
)

func TestParseAttribution(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want Attribution
	}{
		{"absent: defaults", "interval: 1s\n", Attribution{Process: true, Cgroup: true, CmdlineMaxBytes: 256}},
		{"empty mapping keeps defaults", "attribution: {}\n", Attribution{Process: true, Cgroup: true, CmdlineMaxBytes: 256}},
		{"cmdline on, longer", "attribution:\n  cmdline: true\n  cmdline_max_bytes: 4096\n", Attribution{Process: true, Cmdline: true, Cgroup: true, CmdlineMaxBytes: 4096}},
		{"all off", "attribution:\n  process: false\n  cgroup: false\n", Attribution{CmdlineMaxBytes: 256}},
		{"cgroup only", "attribution: {process: false}\n", Attribution{Cgroup: true, CmdlineMaxBytes: 256}},
		{"smallest length", "attribution: {cmdline: true, cmdline_max_bytes: 1}\n", Attribution{Process: true, Cmdline: true, Cgroup: true, CmdlineMaxBytes: 1}},
		{"audit on", "attribution:\n  audit: true\n", Attribution{Process: true, Cgroup: true, Audit: true, CmdlineMaxBytes: 256}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), "c.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if c.Attribution != tt.want {
				t.Errorf("attribution = %+v; want %+v", c.Attribution, tt.want)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}

func TestParseAttributionErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // the whole message
	}{
		{"not a mapping", "attribution: true\n", `c.yaml:1: attribution: want a mapping with process, cmdline, cmdline_max_bytes, cgroup and audit, not a single value`},
		{"unknown key", "attribution:\n  cmdline: true\n  comandline_max: 10\n", `c.yaml:3: attribution: unknown key "comandline_max" (want process, cmdline, cmdline_max_bytes, cgroup or audit)`},
		{"not a bool", "attribution:\n  process: yes\n", `c.yaml:2: attribution.process: "yes" is not true or false`},
		{"zero length", "attribution:\n  cmdline_max_bytes: 0\n", `c.yaml:2: attribution.cmdline_max_bytes: "0" is not a byte count from 1 to 65536`},
		{"too long", "attribution:\n  cmdline_max_bytes: 65537\n", `c.yaml:2: attribution.cmdline_max_bytes: "65537" is not a byte count from 1 to 65536`},
		{"not a number", "attribution:\n  cmdline_max_bytes: 1k\n", `c.yaml:2: attribution.cmdline_max_bytes: "1k" is not a byte count from 1 to 65536`},
		{"cmdline without process", "attribution:\n  process: false\n  cmdline: true\n", `c.yaml:3: attribution.cmdline: true needs process: true (the command line is the owning process's)`},
		{"audit without process", "attribution:\n  process: false\n  audit: true\n", `c.yaml:3: attribution.audit: true needs process: true (audit names the owning process)`},
		{"duplicate key", "attribution:\n  cgroup: true\n  cgroup: false\n", `c.yaml:3: attribution: duplicate key "cgroup" (first at line 2)`},
		{"list value", "attribution:\n  cgroup: [true]\n", `c.yaml:2: attribution.cgroup: want a single value, not a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "c.yaml")
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if err.Error() != tt.want {
				t.Errorf("error\n%s\nwant\n%s", err, tt.want)
			}
		})
	}
}

func TestValidateAttribution(t *testing.T) {
	tests := []struct {
		name string
		edit func(a *Attribution)
		want string // substring; "" for valid
	}{
		{"defaults", func(a *Attribution) {}, ""},
		{"zero length", func(a *Attribution) { a.CmdlineMaxBytes = 0 }, "attribution.cmdline_max_bytes: 0 is not a byte count from 1 to 65536"},
		{"too long", func(a *Attribution) { a.CmdlineMaxBytes = MaxCmdlineMaxBytes + 1 }, "attribution.cmdline_max_bytes: 65537"},
		{"cmdline without process", func(a *Attribution) { a.Process, a.Cmdline = false, true }, "attribution.cmdline: true needs process: true"},
		{"everything off", func(a *Attribution) { a.Process, a.Cgroup = false, false }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(&c.Attribution)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v; want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v; want %q", err, tt.want)
			}
		})
	}
}
