package attribution

import "errors"

// ErrNotSupported is the warning of a platform without /proc and cgroup
// v2: events get a direction and nothing else.
var ErrNotSupported = errors.New("attribution: process and cgroup attribution are not supported on this platform")

// procFS is the resolver's view of /proc. The Linux implementation reads
// the real one; tests use a fake.
type procFS interface {
	// Pids appends the ids of the running processes (thread-group
	// leaders) to dst, in ascending order.
	Pids(dst []int32) ([]int32, error)
	// OpenFDs opens the descriptor table of a process. Errors match
	// fs.ErrPermission when the process is another user's and privileges
	// are missing, fs.ErrNotExist when it has exited.
	OpenFDs(pid int32) (fdDir, error)
	// FDCount returns how many descriptors a process has open, when the
	// kernel says so cheaply (Linux 6.2+); ok is false otherwise.
	FDCount(pid int32) (n int, ok bool)
	// Info reads what events report of a process. The command line is
	// read when cmdlineMax > 0, at most cmdlineMax bytes of it plus a few
	// to cut on a character boundary.
	Info(pid int32, cmdlineMax int) (procInfo, error)
	Close() error
}

// fdDir is one process's open descriptor table.
type fdDir interface {
	// List appends the open descriptor numbers to dst, ascending.
	List(dst []int32) ([]int32, error)
	// Link returns the socket inode descriptor fd refers to; sock is false
	// when it is not a socket. An error means the descriptor is gone.
	Link(fd int32) (inode uint32, sock bool, err error)
	Close() error
}

// procInfo is what Info reads.
type procInfo struct {
	Comm    string
	Exe     string // "" when unreadable
	UID     uint32 // effective
	Cmdline []byte // raw /proc/PID/cmdline prefix
}

// cgroupFS is the resolver's view of the cgroup v2 hierarchy.
type cgroupFS interface {
	// Walk returns every cgroup's id (the inode of its directory, which
	// INET_DIAG_CGROUP_ID carries) and path relative to the mount,
	// "/" for the root.
	Walk() (map[uint64]string, error)
	// Procs appends the pids of the processes in the cgroup at path to dst.
	Procs(path string, dst []int32) ([]int32, error)
}
