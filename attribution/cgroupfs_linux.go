//go:build linux

package attribution

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// sysCgroupFS reads the cgroup v2 hierarchy mounted at mount, whose root
// directory is the cgroup root (the "root" field of mountinfo, "/" unless
// a subtree is bind-mounted).
type sysCgroupFS struct {
	mount string
	root  string
	dents []byte
}

// openCgroupFS finds the cgroup v2 mount in /proc/self/mountinfo: at
// /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones.
// `ip netns exec` and some sandboxes mount a fresh /sys without it; then
// init's mount is used through /proc/1/root (which needs
// CAP_SYS_PTRACE).
func openCgroupFS() (*sysCgroupFS, error) {
	var firstErr error
	for _, src := range [...]struct{ mountinfo, prefix string }{
		{"/proc/self/mountinfo", ""},
		{"/proc/1/mountinfo", "/proc/1/root"},
	} {
		info, err := os.ReadFile(src.mountinfo)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		mount, root, ok := cgroup2Mount(info)
		if !ok {
			continue
		}
		mount = src.prefix + mount
		if err := unix.Access(mount, unix.R_OK|unix.X_OK); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", mount, err)
			}
			continue
		}
		return &sysCgroupFS{mount: mount, root: root, dents: make([]byte, 32<<10)}, nil
	}
	if firstErr != nil {
		return nil, fmt.Errorf("find cgroup v2: %w", firstErr)
	}
	return nil, errors.New("find cgroup v2: no cgroup2 file system is mounted")
}

// global turns a path under the mount into a cgroup path.
func (c *sysCgroupFS) global(rel string) string {
	if c.root == "/" {
		return rel
	}
	if rel == "/" {
		return c.root
	}
	return c.root + rel
}

func (c *sysCgroupFS) Walk() (map[uint64]string, error) {
	fd, err := unix.Open(c.mount, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", c.mount, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", c.mount, err)
	}
	idx := map[uint64]string{st.Ino: c.global("/")}
	err = c.walkDir(fd, "", idx)
	unix.Close(fd)
	if err != nil {
		return nil, err
	}
	return idx, nil
}

type subdir struct {
	name string
	ino  uint64
}

// walkDir indexes the cgroups below the directory open at fd, whose path
// under the mount is rel ("" for the root). The d_ino of a cgroupfs entry
// is its kernfs id, which is the cgroup id.
func (c *sysCgroupFS) walkDir(fd int, rel string, idx map[uint64]string) error {
	var subs []subdir
	err := readDirents(fd, c.dents, func(name []byte, typ byte, ino uint64) {
		if typ == unix.DT_DIR {
			subs = append(subs, subdir{string(name), ino})
		}
	})
	if err != nil {
		return fmt.Errorf("read %s%s: %w", c.mount, rel, err)
	}
	for _, s := range subs {
		path := rel + "/" + s.name
		idx[s.ino] = c.global(path)
		sub, err := unix.Openat(fd, s.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			continue // removed meanwhile
		}
		err = c.walkDir(sub, path, idx)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *sysCgroupFS) Procs(path string, dst []int32) ([]int32, error) {
	rel := path
	if c.root != "/" {
		var ok bool
		if rel, ok = strings.CutPrefix(path, c.root); !ok {
			return dst, fmt.Errorf("cgroup %s is outside the mounted subtree %s", path, c.root)
		}
	}
	data, err := os.ReadFile(c.mount + strings.TrimSuffix(rel, "/") + "/cgroup.procs")
	if err != nil {
		return dst, fmt.Errorf("read cgroup.procs: %w", err)
	}
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		// Processes outside our pid namespace are listed as 0.
		if pid, ok := atoi32(line); ok && pid > 0 {
			dst = append(dst, pid)
		}
	}
	slices.Sort(dst)
	return dst, nil
}
