//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// BindDirs are where namespaces are bind-mounted to outlive their
// processes: `ip netns` and CNI plugins use /run/netns (/var/run/netns on
// older systems, usually the same directory through a symlink), docker
// /run/docker/netns.
var BindDirs = []string{RunDir, "/var/run/netns", "/run/docker/netns"}

// WatchOptions say what a LiveWatcher watches.
type WatchOptions struct {
	// Dirs are watched for bind mounts; nil means BindDirs. A directory
	// that does not exist yet is watched for from its nearest existing
	// parent.
	Dirs []string
	// Procs subscribes to the process-event connector, to see namespaces
	// bound nowhere. It needs CAP_NET_ADMIN.
	Procs bool
}

// Watch limits.
const (
	// bindWait is how long a new file in a bind directory is watched for
	// the namespace mounted on it: `ip netns add` creates the file, then
	// unshares and mounts, and the mount makes no inotify event.
	bindWait = 2 * time.Second
	// maxBindChecks bounds the files waited on at once; past it the
	// watcher asks for a rescan instead.
	maxBindChecks = 64
	// maxSeen bounds the namespaces remembered as reported: past it the
	// memory is cleared, and namespaces already watched are reported
	// again, which costs the caller a map lookup each.
	maxSeen = 1 << 16
	// connBuffer is the receive buffer asked for process events: a fork
	// storm queues thousands of 40-byte events between two reads.
	connBuffer = 4 << 20
)

// WatchStats are cumulative counters of a LiveWatcher.
type WatchStats struct {
	ProcEvents uint64 // process starts read from the connector
	Overruns   uint64 // times process events were lost (ENOBUFS)
	Malformed  uint64 // connector datagrams that did not parse
	Reported   uint64 // namespaces reported
}

// LiveWatcher is the Watcher of a running system.
type LiveWatcher struct {
	out  chan Change
	lost atomic.Bool // a report did not fit in out: send Rescan

	mu   sync.Mutex
	seen map[ID]struct{}
	host ID
	// firstPid maps the pid a namespace was reported in to it: its exit
	// may be the namespace's end.
	firstPid map[int32]ID

	stats struct {
		procEvents, overruns, malformed, reported atomic.Uint64
	}
	checks chan struct{} // semaphore of bind checks

	fw *fsnotify.Watcher
	// dirs are the bind directories watched, set before the watch begins.
	dirs    []string
	conn    *os.File
	quit    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Once
}

// NewWatcher starts watching. A mechanism that cannot start (no inotify,
// no CAP_NET_ADMIN for process events) is left out and explained in the
// returned warnings, one each; the watcher still works with what is left,
// and the caller's rescan covers the rest.
func NewWatcher(opts WatchOptions) (*LiveWatcher, []error, error) {
	host, err := Host()
	if err != nil {
		return nil, nil, err
	}
	w := &LiveWatcher{
		out:      make(chan Change, 256),
		seen:     map[ID]struct{}{host.ID: {}},
		firstPid: map[int32]ID{},
		host:     host.ID,
		checks:   make(chan struct{}, maxBindChecks),
		quit:     make(chan struct{}),
	}
	var warns []error
	dirs := opts.Dirs
	if dirs == nil {
		dirs = BindDirs
	}
	if len(dirs) > 0 {
		if err := w.startDirs(dirs); err != nil {
			warns = append(warns, fmt.Errorf("netns watch: inotify on %s: %w; namespaces bound there are found by the periodic rescan", strings.Join(dirs, ", "), err))
		}
	}
	if opts.Procs {
		if err := w.startConn(); err != nil {
			why := ""
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
				why = " (needs CAP_NET_ADMIN)"
			}
			warns = append(warns, fmt.Errorf("netns watch: process events%s: %w; namespaces bound nowhere (unshare -n) are found by the periodic rescan", why, err))
		}
	}
	return w, warns, nil
}

// Changes implements Watcher.
func (w *LiveWatcher) Changes() <-chan Change { return w.out }

// Forget implements Watcher.
func (w *LiveWatcher) Forget(id ID) {
	w.mu.Lock()
	if id != w.host {
		delete(w.seen, id)
	}
	w.mu.Unlock()
}

// Stats returns the cumulative counters.
func (w *LiveWatcher) Stats() WatchStats {
	return WatchStats{
		ProcEvents: w.stats.procEvents.Load(),
		Overruns:   w.stats.overruns.Load(),
		Malformed:  w.stats.malformed.Load(),
		Reported:   w.stats.reported.Load(),
	}
}

// Close implements Watcher.
func (w *LiveWatcher) Close() error {
	w.closeMu.Do(func() {
		close(w.quit)
		if w.fw != nil {
			w.fw.Close()
		}
		if w.conn != nil {
			w.conn.Close()
		}
		w.wg.Wait()
		close(w.out)
		// Changes the receiver will not take: their descriptors are ours.
		for c := range w.out {
			if c.File != nil {
				c.File.Close()
			}
		}
	})
	return nil
}

// known reports whether id was reported already, and marks it reported.
func (w *LiveWatcher) known(id ID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.seen[id]; ok {
		return true
	}
	if len(w.seen) >= maxSeen {
		clear(w.seen)
		clear(w.firstPid)
		w.seen[w.host] = struct{}{}
	}
	w.seen[id] = struct{}{}
	return false
}

// seenID reports whether id was reported already, without marking it.
func (w *LiveWatcher) seenID(id ID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.seen[id]
	return ok
}

func (w *LiveWatcher) report(ns NS) {
	if w.known(ns.ID) {
		return
	}
	c := Change{NS: ns}
	// Hold the namespace: the process it was seen in may exit before the
	// receiver enters it. Not the same namespace any more (the process
	// exited and its pid was reused): nothing to report.
	f, err := os.OpenFile(ns.Path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) != nil || (ID{st.Dev, st.Ino}) != ns.ID {
			f.Close()
			w.Forget(ns.ID)
			return
		}
		c.File = f
	}
	if pid, ok := procPid(ns.Path); ok {
		w.mu.Lock()
		w.firstPid[pid] = ns.ID
		w.mu.Unlock()
	}
	w.stats.reported.Add(1)
	w.send(c)
}

// send queues c without blocking: a watcher that waited on a busy caller
// would let the kernel drop process events instead. What does not fit is
// replaced by one Rescan.
func (w *LiveWatcher) send(c Change) {
	if w.lost.Load() {
		select {
		case w.out <- Change{Rescan: true}:
			w.lost.Store(false)
		default:
		}
	}
	select {
	case w.out <- c:
		return
	case <-w.quit:
	default:
		if c.NS.ID != (ID{}) {
			w.Forget(c.NS.ID) // so that it is reported again if seen again
		}
		w.lost.Store(true)
	}
	if c.File != nil {
		c.File.Close()
	}
}

// --- bind directories (inotify) ---

func (w *LiveWatcher) startDirs(dirs []string) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	w.fw = fw
	targets := make([]string, 0, len(dirs))
	for _, d := range dirs {
		targets = append(targets, filepath.Clean(d))
	}
	w.dirs = targets
	added := map[ID]string{}
	w.setupDirs(targets, added, false)
	w.wg.Add(1)
	go w.dirLoop(targets, added)
	return nil
}

// setupDirs watches each target directory that exists, and the nearest
// existing parent of each that does not, so that its creation is seen.
// added maps each watched directory's identity to its path: one directory
// reached by two paths (/var/run is /run) is watched once.
//
// fresh says the directories may have just been created: a file in one
// may still be waiting for its mount.
func (w *LiveWatcher) setupDirs(targets []string, added map[ID]string, fresh bool) {
	for _, t := range targets {
		for {
			p, id, ok := nearestDir(t)
			if !ok {
				break
			}
			if _, ok := added[id]; ok {
				break // watched: its events tell of what comes below it
			}
			if err := w.fw.Add(p); err != nil {
				break
			}
			added[id] = p
			if p == t {
				// Namespaces bound before the watch began.
				w.scanDir(t, fresh)
				break
			}
			// A directory made below p between the look and the watch
			// made no event: look again.
			if q, _, _ := nearestDir(t); q == p {
				break
			}
		}
	}
}

// nearestDir returns t, or its nearest parent, that exists as a
// directory.
func nearestDir(t string) (string, ID, bool) {
	for p := t; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return p, ID{Dev: st.Dev, Ino: st.Ino}, true
		}
		if p == "/" {
			return "", ID{}, false
		}
	}
}

// scanDir checks every file of a bind directory.
func (w *LiveWatcher) scanDir(dir string, wait bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		w.checkBind(filepath.Join(dir, e.Name()), wait)
	}
}

func (w *LiveWatcher) dirLoop(targets []string, added map[ID]string) {
	defer w.wg.Done()
	isTarget := func(p string) bool {
		for _, t := range targets {
			if p == t {
				return true
			}
		}
		return false
	}
	leadsToTarget := func(p string) bool {
		for _, t := range targets {
			if p == t || strings.HasPrefix(t, p+"/") {
				return true
			}
		}
		return false
	}
	for {
		select {
		case <-w.quit:
			return
		case ev, ok := <-w.fw.Events:
			if !ok {
				return
			}
			switch {
			case ev.Has(fsnotify.Create) && isTarget(filepath.Dir(ev.Name)):
				w.checkBind(ev.Name, true)
			case (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) && isTarget(filepath.Dir(ev.Name)):
				w.send(Change{Gone: true, NS: NS{Path: ev.Name}})
			case ev.Has(fsnotify.Create) && leadsToTarget(ev.Name),
				(ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) && leadsToTarget(ev.Name):
				// A bind directory (or a parent) appeared or went:
				// watch what exists now.
				for id, p := range added {
					if p == ev.Name || strings.HasPrefix(p, ev.Name+"/") {
						delete(added, id)
						_ = w.fw.Remove(p)
					}
				}
				w.setupDirs(targets, added, true)
			}
		case _, ok := <-w.fw.Errors:
			if !ok {
				return
			}
			// An inotify queue overflow: bind mounts may have been missed.
			w.send(Change{Rescan: true})
		}
	}
}

// checkBind reports the namespace mounted on path. A file just created is
// not a namespace yet (the mount comes after): it is looked at again,
// more and more slowly, until it is one, is removed, or bindWait passes.
func (w *LiveWatcher) checkBind(path string, wait bool) {
	name := ""
	if d := filepath.Dir(path); d == RunDir || d == "/var/run/netns" {
		name = filepath.Base(path)
	}
	if ns, ok := w.bound(path, name); ok || !wait {
		if ok {
			w.report(ns)
		}
		return
	}
	select {
	case w.checks <- struct{}{}:
	default:
		w.send(Change{Rescan: true})
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { <-w.checks }()
		deadline := time.Now().Add(bindWait)
		delay := time.Millisecond
		for time.Now().Before(deadline) {
			select {
			case <-w.quit:
				return
			case <-time.After(delay):
			}
			ns, ok := w.bound(path, name)
			if ok {
				w.report(ns)
				return
			}
			if _, err := os.Lstat(path); err != nil {
				return // removed: the mount failed
			}
			delay = min(2*delay, 50*time.Millisecond)
		}
	}()
}

// bound returns the namespace mounted on path, if one is.
func (w *LiveWatcher) bound(path, name string) (NS, bool) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		return NS{}, false
	}
	id, err := statID(path)
	if err != nil {
		return NS{}, false
	}
	return NS{ID: id, Name: name, Path: path}, true
}

// --- process events (NETLINK_CONNECTOR) ---

func (w *LiveWatcher) startConn() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_CONNECTOR)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, connBuffer); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, connBuffer)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Sendto(fd, listenMessage(procCnMcastListen, 1), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("subscribe: %w", err)
	}
	w.conn = os.NewFile(uintptr(fd), "proc-connector")
	rc, err := w.conn.SyscallConn()
	if err != nil {
		w.conn.Close()
		w.conn = nil
		return err
	}
	w.wg.Add(1)
	go w.connLoop(rc)
	return nil
}

func (w *LiveWatcher) connLoop(rc interface {
	Read(func(fd uintptr) bool) error
}) {
	defer w.wg.Done()
	buf := make([]byte, 64<<10)
	var starts []ProcStart
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			return // closed
		}
		if rerr == unix.ENOBUFS {
			w.stats.overruns.Add(1)
			w.send(Change{Rescan: true})
			continue
		}
		if rerr != nil {
			if rerr == unix.EINTR {
				continue
			}
			select {
			case <-w.quit:
				return
			default:
			}
			w.stats.malformed.Add(1)
			continue
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // only the kernel speaks for the connector
		}
		starts, err = ParseProcEvents(buf[:n], starts[:0])
		if err != nil {
			w.stats.malformed.Add(1)
		}
		w.stats.procEvents.Add(uint64(len(starts)))
		for _, s := range starts {
			if s.Exit {
				if id, ok := w.exited(s.PID); ok {
					w.send(Change{Gone: true, NS: NS{ID: id}})
				}
				continue
			}
			path := "/proc/" + strconv.Itoa(int(s.PID)) + "/ns/net"
			id, err := statID(path)
			if err != nil || w.seenID(id) {
				continue // exited already, or a namespace known
			}
			w.report(NS{ID: id, Name: w.boundName(id), Path: path})
		}
	}
}

// boundName returns the name id is bound under in a bind directory, ""
// when none. `ip netns add` binds a namespace before any process enters
// it, so when a process start in it is seen before the bind directory's
// check has told of the mount, the namespace still has its name on its
// first events.
func (w *LiveWatcher) boundName(id ID) string {
	for _, dir := range w.dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if got, err := statID(filepath.Join(dir, e.Name())); err == nil && got == id {
				return e.Name()
			}
		}
	}
	return ""
}

// exited forgets pid as the process a namespace was reported in, and
// returns that namespace.
func (w *LiveWatcher) exited(pid int32) (ID, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id, ok := w.firstPid[pid]
	if ok {
		delete(w.firstPid, pid)
	}
	return id, ok
}

// procPid returns PID of a /proc/PID/ns/net path.
func procPid(path string) (int32, bool) {
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return 0, false
	}
	n, ok := strings.CutSuffix(rest, "/ns/net")
	if !ok {
		return 0, false
	}
	pid, err := strconv.ParseInt(n, 10, 32)
	return int32(pid), err == nil && pid > 0
}
