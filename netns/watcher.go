package netns

import (
	"os"
	"strconv"
)

// Change is what a Watcher tells of: a namespace seen to appear, or that
// some may have been missed and a full Discover is due.
type Change struct {
	// NS is a namespace the watcher has not reported before (or not since
	// Forget); zero when Rescan is set.
	NS NS
	// Rescan: the watcher fell behind (a full queue, a lost batch of
	// process events) and a namespace may have appeared unreported.
	Rescan bool
	// Gone: a namespace may have vanished: a file was removed from a bind
	// directory, or the process a namespace was reported in exited. Only
	// a rescan can tell (other processes may hold it); NS is set when the
	// watcher knows which.
	Gone bool
	// File, when not nil, is an open descriptor of NS, taken when it was
	// seen: it keeps the namespace enterable (through FilePath) after the
	// process it was seen in exits, as a short-lived one does before the
	// receiver gets to it. The receiver closes it.
	File *os.File
}

// FilePath is a path that enters the namespace of c.File while it is
// open; NS.Path when there is no File.
func (c Change) FilePath() string {
	if c.File == nil {
		return c.NS.Path
	}
	return "/proc/self/fd/" + strconv.Itoa(int(c.File.Fd()))
}

// Watcher reports network namespaces as they appear, so that a daemon
// need not wait for its next Discover to watch them:
//
//   - a namespace bound in a directory (`ip netns add`, CNI, docker) is
//     seen when its bind mount is made there, through inotify;
//   - a namespace bound nowhere (`unshare -n`, systemd PrivateNetwork=,
//     clone(CLONE_NEWNET)) is seen when its first process forks or
//     execs, through the kernel's process-event connector: each new
//     process's /proc/PID/ns/net is stat'ed and compared with the
//     namespaces already seen, which costs one stat, not a rescan.
//
// Neither sees everything: a process can unshare without exec'ing (`ip
// netns add` itself does), and events can be lost under load (reported as
// Rescan). The caller keeps a periodic Discover as the safety net, and
// releases vanished namespaces there: a Watcher reports appearances only.
type Watcher interface {
	// Changes delivers what the watcher sees. Each namespace is reported
	// once until Forget.
	Changes() <-chan Change
	// Forget says the caller has released the namespace: it is reported
	// again if seen again (namespace inodes are reused once freed).
	Forget(ID)
	// Close stops the watcher and closes Changes.
	Close() error
}
