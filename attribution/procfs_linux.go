//go:build linux

package attribution

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysProcFS reads the real /proc. It keeps a descriptor on /proc and
// opens everything relative to it, and reads with raw getdents and
// readlinkat into reused buffers: a first pass reads a link per open
// descriptor on the host, so per-link overhead is what it must avoid.
type sysProcFS struct {
	root    int  // /proc
	counts  bool // stat(/proc/PID/fd).st_size is the descriptor count (Linux 6.2+)
	dents   []byte
	name    []byte
	link    []byte
	dir     sysFDDir
	fileBuf []byte
}

func openProcFS() (*sysProcFS, error) {
	fd, err := unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /proc: %w", err)
	}
	p := &sysProcFS{
		root:    fd,
		dents:   make([]byte, 64<<10),
		name:    make([]byte, 0, 64),
		link:    make([]byte, 256),
		fileBuf: make([]byte, 4096),
	}
	// Our own table is never empty (this descriptor is in it), so a zero
	// size means the kernel does not count.
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "self/fd", &st, 0); err == nil && st.Size > 0 {
		p.counts = true
	}
	p.dir.fs = p
	return p, nil
}

func (p *sysProcFS) Close() error {
	if p.root < 0 {
		return nil
	}
	err := unix.Close(p.root)
	p.root = -1
	return err
}

// readNames calls fn with each entry name of the directory open at fd.
func (p *sysProcFS) readNames(fd int, fn func(name []byte, typ byte, ino uint64)) error {
	return readDirents(fd, p.dents, fn)
}

// readDirents reads a whole directory with getdents64, calling fn with
// each entry's name (without . and ..), d_type and d_ino.
func readDirents(fd int, buf []byte, fn func(name []byte, typ byte, ino uint64)) error {
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for off := 0; off+19 <= n; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(buf[off+16]) | int(buf[off+17])<<8
			if reclen < 20 || off+reclen > n {
				return errors.New("getdents: malformed entry")
			}
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if !(len(name) == 1 && name[0] == '.') && !(len(name) == 2 && name[0] == '.' && name[1] == '.') {
				fn(name, buf[off+18], direntIno(buf[off:]))
			}
			off += reclen
		}
	}
}

// direntIno returns the d_ino of the dirent at the start of entry.
func direntIno(entry []byte) uint64 {
	return uint64(entry[0]) | uint64(entry[1])<<8 | uint64(entry[2])<<16 | uint64(entry[3])<<24 |
		uint64(entry[4])<<32 | uint64(entry[5])<<40 | uint64(entry[6])<<48 | uint64(entry[7])<<56
}

func (p *sysProcFS) Pids(dst []int32) ([]int32, error) {
	if _, err := unix.Seek(p.root, 0, 0); err != nil {
		return dst, fmt.Errorf("rewind /proc: %w", err)
	}
	err := p.readNames(p.root, func(name []byte, _ byte, _ uint64) {
		if pid, ok := atoi32(name); ok {
			dst = append(dst, pid)
		}
	})
	if err != nil {
		return dst, fmt.Errorf("read /proc: %w", err)
	}
	// The kernel lists pids in order; a sort keeps the promise anyway.
	if !slices.IsSorted(dst) {
		slices.Sort(dst)
	}
	return dst, nil
}

// path sets p.name to "PID/rest\x00" and returns a pointer to it.
func (p *sysProcFS) path(pid int32, rest string) *byte {
	p.name = strconv.AppendInt(p.name[:0], int64(pid), 10)
	p.name = append(p.name, '/')
	p.name = append(p.name, rest...)
	p.name = append(p.name, 0)
	return &p.name[0]
}

func (p *sysProcFS) OpenFDs(pid int32) (fdDir, error) {
	fd, err := openat(p.root, p.path(pid, "fd"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open /proc/%d/fd: %w", pid, errnoErr(err))
	}
	p.dir.fd = fd
	return &p.dir, nil
}

func (p *sysProcFS) FDCount(pid int32) (int, bool) {
	if !p.counts {
		return 0, false
	}
	var st unix.Stat_t
	if err := unix.Fstatat(p.root, strconv.Itoa(int(pid))+"/fd", &st, 0); err != nil {
		return 0, false
	}
	return int(st.Size), true
}

// sysFDDir is the one open descriptor table; the resolver reads one at a
// time, so it is reused.
type sysFDDir struct {
	fs   *sysProcFS
	fd   int
	name [16]byte
}

func (d *sysFDDir) List(dst []int32) ([]int32, error) {
	err := d.fs.readNames(d.fd, func(name []byte, _ byte, _ uint64) {
		if fd, ok := atoi32(name); ok {
			dst = append(dst, fd)
		}
	})
	if err != nil {
		return dst, errnoErr(err)
	}
	if !slices.IsSorted(dst) {
		slices.Sort(dst)
	}
	return dst, nil
}

func (d *sysFDDir) Link(fd int32) (uint32, bool, error) {
	b := strconv.AppendInt(d.name[:0], int64(fd), 10)
	b = append(b, 0)
	n, err := readlinkat(d.fd, &b[0], d.fs.link)
	if err != nil {
		return 0, false, err
	}
	inode, ok := parseSocketLink(d.fs.link[:n])
	return inode, ok, nil
}

func (d *sysFDDir) Close() error {
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

func (p *sysProcFS) Info(pid int32, cmdlineMax int) (procInfo, error) {
	var in procInfo
	b, err := p.readFile(pid, "comm", p.fileBuf)
	if err != nil {
		return in, err
	}
	in.Comm = string(bytes.TrimSuffix(b, []byte("\n")))
	if b, err = p.readFile(pid, "status", p.fileBuf); err != nil {
		return in, err
	}
	if uid, ok := statusUID(b); ok {
		in.UID = uid
	}
	if n, err := readlinkat(p.root, p.path(pid, "exe"), p.link); err == nil {
		in.Exe = string(p.link[:n])
	}
	if cmdlineMax > 0 {
		// A few bytes more than the limit, so that the cut can back up to a
		// character boundary and knows the line was longer.
		buf := make([]byte, cmdlineMax+8)
		if b, err := p.readFile(pid, "cmdline", buf); err == nil {
			in.Cmdline = b
		}
	}
	return in, nil
}

// readFile reads up to len(buf) bytes of /proc/PID/name.
func (p *sysProcFS) readFile(pid int32, name string, buf []byte) ([]byte, error) {
	fd, err := openat(p.root, p.path(pid, name), unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open /proc/%d/%s: %w", pid, name, errnoErr(err))
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read /proc/%d/%s: %w", pid, name, errnoErr(err))
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], nil
}

// statusUID returns the effective uid from /proc/PID/status
// ("Uid:\treal\teffective\tsaved\tfs").
func statusUID(b []byte) (uint32, bool) {
	i := bytes.Index(b, []byte("\nUid:"))
	if i < 0 {
		return 0, false
	}
	line := b[i+5:]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	if len(f) < 2 {
		return 0, false
	}
	u, err := strconv.ParseUint(string(f[1]), 10, 32)
	return uint32(u), err == nil
}

// atoi32 parses a positive decimal that fits an int32.
func atoi32(b []byte) (int32, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > 1<<31-1 {
		return 0, false
	}
	return int32(n), true
}

// errnoErr maps the errnos of /proc reads onto the fs errors the
// resolver tests with errors.Is: a process that exited is ESRCH or
// ENOENT, one we may not read EACCES or EPERM.
func errnoErr(err error) error {
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("%w (%w)", os.ErrNotExist, err)
	}
	return err
}

// The wrappers below take NUL-terminated names in reused buffers, so that
// reading a link costs no allocation; x/sys/unix would convert a Go
// string for each call.

func openat(dirfd int, name *byte, flags int) (int, error) {
	for {
		fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)), uintptr(flags), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(fd), nil
	}
}

func readlinkat(dirfd int, name *byte, buf []byte) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
