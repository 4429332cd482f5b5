// Package safefile opens the files connlogd writes and reads while it runs
// as root, so that a user who can create names in a log or state
// directory cannot make root write through a link into some other file.
//
// The rules, one owner for all of them (the file sink, the state file and
// the configuration check call these functions):
//
//   - the last component of a path is never followed when it is a
//     symbolic link (O_NOFOLLOW); the directories above it are root's
//     business and are followed;
//   - the directory that holds the file must be writable by nobody but
//     root and the daemon's own user (owner root or the daemon's user;
//     group write only for group root or the daemon's group; no write
//     for others), unless it has the sticky bit (/tmp), where others can
//     create names but not replace ours;
//   - an existing regular file with more than one hard link is refused:
//     the other link may be a file the attacker could not write
//     (/etc/shadow, linked into a log directory on the same filesystem);
//   - a mode that lets group or others write, or sets bits beyond 0666
//     (execute, setuid, sticky), is refused;
//   - character devices and FIFOs are allowed for output (/dev/null, a
//     pipe to an agent); directories, sockets and block devices are not.
//
// Every refusal is a *RefusedError that names the path and the reason.
// The package never logs.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// RefusedError says why a path was refused.
type RefusedError struct {
	Path   string
	Reason string
}

func (e *RefusedError) Error() string { return e.Path + ": refused: " + e.Reason }

func refuse(path, format string, args ...any) error {
	return &RefusedError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// CheckMode refuses a creation mode that grants write to group or others,
// or sets bits beyond 0666.
func CheckMode(m fs.FileMode) error {
	switch {
	case m&^0o777 != 0 || m&0o111 != 0:
		return fmt.Errorf("%#o: only read and write bits (at most 0666) are allowed", uint32(m))
	case m&0o022 != 0:
		return fmt.Errorf("%#o lets group or others write: an audit log must be writable by its owner only", uint32(m))
	}
	return nil
}

// checkDirStat applies the directory rule to a directory's stat.
func checkDirStat(dir string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return refuse(dir, "not a directory")
	}
	if st.Mode&unix.S_ISVTX != 0 {
		return nil // sticky: others cannot rename or remove our names
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return refuse(dir, "directory is owned by uid %d, which could replace the file with a link", st.Uid)
	}
	groupOK := st.Gid == 0 || int(st.Gid) == os.Getegid()
	if st.Mode&0o002 != 0 || (st.Mode&0o020 != 0 && !groupOK) {
		return refuse(dir, "directory is writable by group or others (mode %#o, group %d) and not sticky; they could replace the file with a link (use a directory only root and the daemon's user can write, such as /var/log/connlogd)", st.Mode&0o7777, st.Gid)
	}
	return nil
}

// checkFileStat applies the rules for an existing file to its stat
// (taken without following a link). write says the file is to be
// written: then character devices and FIFOs are allowed too.
func checkFileStat(path string, st *unix.Stat_t, write bool) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if st.Nlink > 1 {
			return refuse(path, "regular file has %d hard links; another name could be a file connlogd must not write", st.Nlink)
		}
		return nil
	case unix.S_IFLNK:
		return refuse(path, "is a symbolic link; connlogd does not follow the last component")
	case unix.S_IFCHR, unix.S_IFIFO:
		if write {
			return nil
		}
		return refuse(path, "not a regular file")
	case unix.S_IFDIR:
		return refuse(path, "is a directory")
	}
	return refuse(path, "not a regular file, character device or FIFO")
}

// CheckDir checks, without side effects, that dir exists, that nobody
// but root and the daemon's user can write it (unless it is sticky) and
// that the daemon can create files in it.
func CheckDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: dir, Err: err}
	}
	if err := checkDirStat(dir, &st); err != nil {
		return err
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return &fs.PathError{Op: "create in", Path: dir, Err: err}
	}
	return nil
}

// CheckWrite checks, without creating or opening anything, that
// OpenAppend(path) would not be refused by the rules above and that the
// directory exists and is writable. A missing file is fine: it would be
// created.
func CheckWrite(path string) error {
	dir := filepath.Dir(path)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: dir, Err: err}
	}
	if err := checkDirStat(dir, &st); err != nil {
		return err
	}
	err := unix.Lstat(path, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
			return &fs.PathError{Op: "create in", Path: dir, Err: err}
		}
		return nil
	case err != nil:
		return &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	if err := checkFileStat(path, &st, true); err != nil {
		return err
	}
	if err := unix.Access(path, unix.W_OK); err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return nil
}

// openDir opens path's directory for openat and checks it.
func openDir(path string) (int, error) {
	dir := filepath.Dir(path)
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, &fs.PathError{Op: "stat", Path: dir, Err: err}
	}
	if err := checkDirStat(dir, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// OpenAppend opens path for appending, creating it with mode when it does
// not exist (mode is applied exactly, whatever the umask). The checks are
// made on the opened directory and file, so a name swapped between check
// and open cannot slip through. O_APPEND keeps lines whole next to other
// writers and after logrotate's copytruncate.
func OpenAppend(path string, mode fs.FileMode) (*os.File, error) {
	if err := CheckMode(mode); err != nil {
		return nil, refuse(path, "mode %v", err)
	}
	dfd, err := openDir(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	base := filepath.Base(path)
	const flags = unix.O_WRONLY | unix.O_APPEND | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NOCTTY
	created := false
	fd, err := unix.Openat(dfd, base, flags, 0)
	if errors.Is(err, unix.ENOENT) {
		fd, err = unix.Openat(dfd, base, flags|unix.O_CREAT|unix.O_EXCL, uint32(mode))
		created = err == nil
		if errors.Is(err, unix.EEXIST) {
			// Someone else created it between the two opens: theirs
			// stands, checked like any existing file.
			fd, err = unix.Openat(dfd, base, flags, 0)
		}
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, refuse(path, "is a symbolic link; connlogd does not follow the last component")
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if err := checkFileStat(path, &st, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if created {
		// The umask may have cleared bits of mode. Set it once, on
		// creation: an administrator's later chmod of an existing file
		// stands.
		if err := unix.Fchmod(fd, uint32(mode)); err != nil {
			unix.Close(fd)
			return nil, &fs.PathError{Op: "chmod", Path: path, Err: err}
		}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// ErrTooLarge is wrapped by the errors of the Read functions for a file
// beyond their limit.
var ErrTooLarge = errors.New("file too large")

// ReadFile reads at most limit bytes of a regular file or FIFO at path,
// following links (a configuration file may be a symlink that a
// Kubernetes ConfigMap swaps), and refuses one that is larger, or a
// device (/dev/zero would never end).
func ReadFile(path string, limit int64) ([]byte, error) {
	flags := os.O_RDONLY | unix.O_NOCTTY
	if fi, err := os.Stat(path); err == nil && fi.Mode()&fs.ModeNamedPipe == 0 {
		// Not a pipe: never wait in open (a device may block there). A
		// pipe's open waits for its writer, or there is nothing to read.
		flags |= unix.O_NONBLOCK
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, err // *fs.PathError names the file
	}
	defer f.Close()
	return readBounded(f, path, limit, false)
}

// ReadNoFollow reads a regular file of at most limit bytes, refusing a
// symbolic link as the last component, a file with several hard links
// and anything but a regular file.
func ReadNoFollow(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, refuse(path, "is a symbolic link; connlogd does not follow the last component")
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readBounded(f, path, limit, true)
}

func readBounded(f *os.File, path string, limit int64, strict bool) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if strict {
			if err := checkFileStat(path, &st, false); err != nil {
				return nil, err
			}
		}
		if st.Size > limit {
			return nil, fmt.Errorf("%s: %w: %d bytes, more than the limit of %d", path, ErrTooLarge, st.Size, limit)
		}
	case unix.S_IFIFO:
		if strict {
			return nil, refuse(path, "not a regular file")
		}
		// A pipe (process substitution): read, bounded below.
	default:
		return nil, refuse(path, "not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		// It grew while being read.
		return nil, fmt.Errorf("%s: %w: more than the limit of %d bytes", path, ErrTooLarge, limit)
	}
	return b, nil
}
