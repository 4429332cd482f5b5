package attribution

import "github.com/connlogd/connlogd/event"

// Describe returns the owner fields of a process known from another
// source than /proc (the audit records of its calls, package audit):
// the fields /proc gives, the user named and the command line cut as for
// the processes this package finds, the command line only when
// configured. cmdline is the raw command line, arguments ended by NULs.
func (r *Resolver) Describe(pid int32, euid uint32, comm, exe string, cmdline []byte) *event.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := &event.Process{PID: int(pid), UID: euid, User: r.userName(euid), Comm: comm, Exe: exe}
	if r.cfg.Cmdline && len(cmdline) > 0 {
		p.Cmdline = formatCmdline(cmdline, r.cfg.CmdlineMaxBytes)
	}
	return p
}

// SocketLink returns the inode of a /proc/PID/fd link target of the form
// "socket:[INODE]".
func SocketLink(target []byte) (uint32, bool) { return parseSocketLink(target) }
