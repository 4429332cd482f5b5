package attribution

import (
	"fmt"
	"io/fs"
	"maps"
	"slices"

	"github.com/connlogd/connlogd/config"
)

// fakeProc is a process of fakeFS. fds maps descriptor numbers to socket
// inodes; 0 stands for a descriptor that is not a socket.
type fakeProc struct {
	fds     map[int32]uint32
	comm    string
	exe     string
	uid     uint32
	cmdline string
	cgroup  string
	denied  bool
}

// fakeFS is an in-memory /proc and cgroup tree, counting what is read.
type fakeFS struct {
	procs    map[int32]*fakeProc
	cgroups  map[uint64]string // id → path
	counts   bool              // FDCount works
	links    int               // Link calls
	tables   int               // OpenFDs calls
	listings int               // Pids calls
	walks    int
	reads    []int32 // pids whose tables were opened, in order
}

func newFakeFS() *fakeFS {
	return &fakeFS{procs: map[int32]*fakeProc{}, cgroups: map[uint64]string{1: "/"}, counts: true}
}

// add starts a process in cgroup path holding the given sockets at
// descriptors 3, 4, … after three non-socket ones (0, 1, 2).
func (f *fakeFS) add(pid int32, comm, cgroup string, inodes ...uint32) *fakeProc {
	p := &fakeProc{fds: map[int32]uint32{0: 0, 1: 0, 2: 0}, comm: comm, exe: "/usr/bin/" + comm, cgroup: cgroup}
	for i, ino := range inodes {
		p.fds[int32(3+i)] = ino
	}
	f.procs[pid] = p
	return p
}

func (f *fakeFS) Pids(dst []int32) ([]int32, error) {
	f.listings++
	return append(dst, slices.Sorted(maps.Keys(f.procs))...), nil
}

func (f *fakeFS) OpenFDs(pid int32) (fdDir, error) {
	p := f.procs[pid]
	if p == nil {
		return nil, fmt.Errorf("open /proc/%d/fd: %w", pid, fs.ErrNotExist)
	}
	if p.denied {
		return nil, fmt.Errorf("open /proc/%d/fd: %w", pid, fs.ErrPermission)
	}
	f.tables++
	f.reads = append(f.reads, pid)
	return &fakeDir{fs: f, p: p}, nil
}

func (f *fakeFS) FDCount(pid int32) (int, bool) {
	p := f.procs[pid]
	if !f.counts || p == nil {
		return 0, false
	}
	return len(p.fds), true
}

func (f *fakeFS) Info(pid int32, cmdlineMax int) (procInfo, error) {
	p := f.procs[pid]
	if p == nil {
		return procInfo{}, fmt.Errorf("open /proc/%d/stat: %w", pid, fs.ErrNotExist)
	}
	in := procInfo{Comm: p.comm, Exe: p.exe, UID: p.uid}
	if cmdlineMax > 0 {
		in.Cmdline = []byte(p.cmdline)
		if len(in.Cmdline) > cmdlineMax+8 {
			in.Cmdline = in.Cmdline[:cmdlineMax+8]
		}
	}
	return in, nil
}

func (f *fakeFS) Close() error { return nil }

func (f *fakeFS) Walk() (map[uint64]string, error) {
	f.walks++
	return maps.Clone(f.cgroups), nil
}

func (f *fakeFS) Procs(path string, dst []int32) ([]int32, error) {
	if !slices.Contains(slices.Collect(maps.Values(f.cgroups)), path) {
		return dst, fmt.Errorf("read cgroup.procs: %w", fs.ErrNotExist)
	}
	for pid, p := range f.procs {
		if p.cgroup == path {
			dst = append(dst, pid)
		}
	}
	return dst, nil
}

type fakeDir struct {
	fs *fakeFS
	p  *fakeProc
}

func (d *fakeDir) List(dst []int32) ([]int32, error) {
	return append(dst, slices.Sorted(maps.Keys(d.p.fds))...), nil
}

func (d *fakeDir) Link(fd int32) (uint32, bool, error) {
	d.fs.links++
	ino, ok := d.p.fds[fd]
	if !ok {
		return 0, false, fs.ErrNotExist
	}
	return ino, ino != 0, nil
}

func (d *fakeDir) Close() error { return nil }

// newFakeResolver returns a Resolver reading f, with user names from a
// fixed table.
func newFakeResolver(cfg config.Attribution, f *fakeFS) *Resolver {
	r := newResolver(cfg)
	r.procfs, r.cgfs = f, f
	r.lookupUser = func(uid uint32) (string, bool) {
		switch uid {
		case 0:
			return "root", true
		case 33:
			return "www-data", true
		}
		return "", false
	}
	return r
}

var defaultCfg = config.Attribution{Process: true, Cgroup: true, CmdlineMaxBytes: 256}
