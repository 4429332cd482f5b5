package config

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Attribution says which owner fields connlogd adds to socket events
// (package attribution). Direction is always added: it costs nothing and
// needs no privilege.
type Attribution struct {
	// Process maps sockets to the processes holding them, through
	// /proc/PID/fd: pid, comm, exe, user. Default true.
	Process bool
	// Cmdline adds the process's command line (needs Process), cut to
	// CmdlineMaxBytes bytes. Default false: command lines can hold secrets.
	Cmdline         bool
	CmdlineMaxBytes int // default 256
	// Cgroup adds the cgroup v2 path, systemd unit and container id of the
	// socket's cgroup. Default true.
	Cgroup bool
	// Audit also names the process of connections too short for /proc
	// (package audit): connlogd adds audit rules for connect and accept
	// and reads their records. Default false: the rules cost every process
	// on the host some system call overhead (docs/events.md).
	Audit bool
}

// Attribution defaults and limits.
const (
	DefaultCmdlineMaxBytes = 256
	MaxCmdlineMaxBytes     = 65536 // beyond this a line is a dump, not a log field
)

func defaultAttribution() Attribution {
	return Attribution{Process: true, Cgroup: true, CmdlineMaxBytes: DefaultCmdlineMaxBytes}
}

// validate checks a section built in code by the rules Parse applies.
func (a *Attribution) validate() error {
	if a.CmdlineMaxBytes < 1 || a.CmdlineMaxBytes > MaxCmdlineMaxBytes {
		return fmt.Errorf("cmdline_max_bytes: %d is not a byte count from 1 to %d", a.CmdlineMaxBytes, MaxCmdlineMaxBytes)
	}
	if a.Cmdline && !a.Process {
		return fmt.Errorf("cmdline: true needs process: true (the command line is the owning process's)")
	}
	if a.Audit && !a.Process {
		return fmt.Errorf("audit: true needs process: true (audit names the owning process)")
	}
	return nil
}

// attribution parses the attribution section.
func (p *parser) attribution(n *yaml.Node) (Attribution, error) {
	a := defaultAttribution()
	if n.Kind != yaml.MappingNode {
		return a, p.errorf(n.Line, "attribution", "want a mapping with process, cmdline, cmdline_max_bytes, cgroup and audit, not a %s", kindName(n))
	}
	cmdlineLine, auditLine := 0, 0
	err := p.fields(n, "attribution", func(key string, k, v *yaml.Node) error {
		path := "attribution." + key
		s, err := p.scalar(v, path)
		if err != nil {
			return err
		}
		switch key {
		case "process", "cmdline", "cgroup", "audit":
			var b bool
			switch s {
			case "true":
				b = true
			case "false":
			default:
				return p.errorf(v.Line, path, "%q is not true or false", s)
			}
			switch key {
			case "process":
				a.Process = b
			case "cmdline":
				a.Cmdline, cmdlineLine = b, v.Line
			case "audit":
				a.Audit, auditLine = b, v.Line
			default:
				a.Cgroup = b
			}
		case "cmdline_max_bytes":
			b, err := strconv.Atoi(s)
			if err != nil || b < 1 || b > MaxCmdlineMaxBytes {
				return p.errorf(v.Line, path, "%q is not a byte count from 1 to %d", s, MaxCmdlineMaxBytes)
			}
			a.CmdlineMaxBytes = b
		default:
			return p.errorf(k.Line, "attribution", "unknown key %q (want process, cmdline, cmdline_max_bytes, cgroup or audit)", key)
		}
		return nil
	})
	if err == nil && a.Cmdline && !a.Process {
		err = p.errorf(cmdlineLine, "attribution.cmdline", "true needs process: true (the command line is the owning process's)")
	}
	if err == nil && a.Audit && !a.Process {
		err = p.errorf(auditLine, "attribution.audit", "true needs process: true (audit names the owning process)")
	}
	return a, err
}
