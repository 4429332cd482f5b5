//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// RunDir is where `ip netns` keeps named namespaces.
const RunDir = "/run/netns"

func statID(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, err
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// Host returns the daemon's own namespace.
func Host() (NS, error) {
	id, err := statID("/proc/self/ns/net")
	if err != nil {
		return NS{}, fmt.Errorf("netns host: %w", err)
	}
	return NS{ID: id, Path: "/proc/self/ns/net", Host: true}, nil
}

// Discover lists the namespaces bound in BindDirs (named after their file
// in /run/netns) and those of running processes (/proc/*/ns/net), each
// once, the host's first. Entries that
// vanish while it reads, or that it may not read, are skipped: the caller
// rescans periodically.
func Discover() ([]NS, error) {
	host, err := Host()
	if err != nil {
		return nil, err
	}
	seen := map[ID]bool{host.ID: true}
	out := []NS{host}
	add := func(path, name string) {
		id, err := statID(path)
		// Every namespace file is on nsfs, whose one device the host's
		// shares: a bind file whose mount is not made yet (`ip netns add`
		// creates it first) is not one.
		if err != nil || seen[id] || id.Dev != host.ID.Dev {
			return
		}
		seen[id] = true
		out = append(out, NS{ID: id, Name: name, Path: path})
	}
	for _, dir := range BindDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		named := dir == RunDir || dir == "/var/run/netns"
		for _, e := range ents {
			name := ""
			if named {
				name = e.Name()
			}
			add(filepath.Join(dir, e.Name()), name)
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("netns discover: %w", err)
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		add(filepath.Join("/proc", p.Name(), "ns", "net"), "")
	}
	sort.SliceStable(out[1:], func(i, j int) bool { return out[1+i].ID.Ino < out[1+j].ID.Ino })
	return out, nil
}

// Resolve finds the namespace a configured entry names: a /run/netns
// name, or a path to an nsfs file (/proc/PID/ns/net, a bind mount).
func Resolve(entry string) (NS, error) {
	path := entry
	name := ""
	if !filepath.IsAbs(entry) {
		path, name = filepath.Join(RunDir, entry), entry
	} else if filepath.Dir(entry) == RunDir {
		name = filepath.Base(entry)
	}
	id, err := statID(path)
	if err != nil {
		return NS{}, fmt.Errorf("netns %s: %w", entry, err)
	}
	host, err := Host()
	if err == nil && host.ID == id {
		return host, nil
	}
	if err == nil && id.Dev != host.ID.Dev {
		return NS{}, fmt.Errorf("netns %s: %w", entry, errNotNamespace)
	}
	return NS{ID: id, Name: name, Path: path}, nil
}

// Do runs fn on an OS thread inside ns. It needs CAP_SYS_ADMIN for any
// namespace but the daemon's own.
func Do(ns NS, fn func() error) error {
	if ns.Host {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// A fresh goroutine owns the locked thread: if it cannot go back
		// to the daemon's namespace, the goroutine ends still locked and
		// the runtime discards the thread instead of reusing it.
		runtime.LockOSThread()
		errc <- doLocked(ns, fn)
	}()
	return <-errc
}

func doLocked(ns NS, fn func() error) error {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: save current: %w", ns, err)
	}
	defer orig.Close()
	target, err := os.Open(ns.Path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()
	// The file must still be the namespace we discovered, not a new one
	// that took its name.
	var st unix.Stat_t
	if err := unix.Fstat(int(target.Fd()), &st); err != nil || (ID{st.Dev, st.Ino}) != ns.ID {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: %w", ns, errGone)
	}
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: setns: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("netns %s: return to the daemon's namespace: %w", ns, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

var errGone = errors.New("namespace is gone")

// errNotNamespace: the file is not on nsfs, such as a bind file whose
// mount is not made yet.
var errNotNamespace = errors.New("not a network namespace (yet)")

// IsPermission reports whether err means the daemon lacks the privilege
// to enter namespaces (CAP_SYS_ADMIN).
func IsPermission(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, os.ErrPermission)
}
