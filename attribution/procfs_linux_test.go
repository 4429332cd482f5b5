//go:build linux

package attribution

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStatusUID(t *testing.T) {
	tests := []struct {
		name, status string
		uid          uint32
		ok           bool
	}{
		{"effective is the second", "Name:\tsudo\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t1000\t0\t0\t0\n", 0, true},
		{"plain", "Name:\tsh\nUid:\t33\t33\t33\t33\n", 33, true},
		{"last line without newline", "Name:\tsh\nUid:\t1\t2\t3\t4", 2, true},
		{"no Uid line", "Name:\tsh\nGid:\t0\t0\t0\t0\n", 0, false},
		{"short Uid line", "Name:\tsh\nUid:\t5\n", 0, false},
		{"not a number", "Name:\tsh\nUid:\t5\tx\t5\t5\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, ok := statusUID([]byte(tt.status))
			if uid != tt.uid || ok != tt.ok {
				t.Errorf("statusUID = %d, %v; want %d, %v", uid, ok, tt.uid, tt.ok)
			}
		})
	}
}

func TestAtoi32(t *testing.T) {
	tests := []struct {
		in string
		n  int32
		ok bool
	}{
		{"0", 0, true}, {"1234", 1234, true}, {"2147483647", 2147483647, true},
		{"2147483648", 0, false}, {"", 0, false}, {"12a", 0, false}, {"-1", 0, false},
		{"99999999999", 0, false}, {"self", 0, false},
	}
	for _, tt := range tests {
		n, ok := atoi32([]byte(tt.in))
		if n != tt.n || ok != tt.ok {
			t.Errorf("atoi32(%q) = %d, %v; want %d, %v", tt.in, n, ok, tt.n, tt.ok)
		}
	}
}

// TestProcFSSelf reads this process through the real /proc: a socket it
// opens is found among its descriptors, and a missing process maps to
// fs.ErrNotExist.
func TestProcFSSelf(t *testing.T) {
	p, err := openProcFS()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	sfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		t.Fatal(err)
	}
	pid := int32(os.Getpid())
	pids, err := p.Pids(nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, q := range pids {
		found = found || q == pid
	}
	if !found {
		t.Errorf("Pids does not list this process (%d)", pid)
	}
	dir, err := p.OpenFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := dir.List(nil)
	if err != nil {
		t.Fatal(err)
	}
	n, ok := p.FDCount(pid)
	if ok && n < len(fds)-1 {
		// The listing's own descriptor may or may not be counted.
		t.Errorf("FDCount %d, listing %d", n, len(fds))
	}
	for _, fd := range []int32{int32(r.Fd()), int32(w.Fd())} {
		if _, sock, err := dir.Link(fd); err != nil || sock {
			t.Errorf("pipe descriptor %d: sock %v, err %v; want a non-socket", fd, sock, err)
		}
	}
	if inode, sock, err := dir.Link(int32(sfd)); err != nil || !sock || uint64(inode) != st.Ino {
		t.Errorf("socket descriptor %d: inode %d, sock %v, err %v; want inode %d", sfd, inode, sock, err, st.Ino)
	}
	dir.Close()
	in, err := p.Info(pid, 64)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if in.UID != uint32(os.Geteuid()) || in.Exe != exe || len(in.Cmdline) == 0 || in.Comm == "" {
		t.Errorf("Info = %+v; want uid %d, exe %q, a command line", in, os.Geteuid(), exe)
	}
	if _, err := p.OpenFDs(1<<30 + 7); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFDs of a missing pid: %v; want fs.ErrNotExist", err)
	}
}
