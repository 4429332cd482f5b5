package safefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// CheckWrite, which -check-config uses, and OpenAppend, which the sink
// uses, refuse the same paths for the same reason.
func TestCheckWriteAgreesWithOpenAppend(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sub := func(name string, mode fs.FileMode, uid int) string {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, 0); err != nil {
			t.Fatal(err)
		}
		return p
	}
	target := file("target")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard")
	if err := os.Link(file("orig"), hard); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path, reason string // reason "" when allowed
	}{
		{filepath.Join(dir, "new.json"), ""},
		{file("existing.json"), ""},
		{"/dev/null", ""},
		{link, "is a symbolic link"},
		{hard, "2 hard links"},
		{dir, "is a directory"},
		{filepath.Join(sub("world", 0o777, 0), "x"), "writable by group or others"},
		{filepath.Join(sub("theirs", 0o755, 65534), "x"), "owned by uid 65534"},
		{filepath.Join(sub("sticky", 0o777|fs.ModeSticky, 65534), "x"), ""},
		{filepath.Join(dir, "missing", "x"), "no such file or directory"},
	} {
		cerr := CheckWrite(tt.path)
		f, oerr := OpenAppend(tt.path, 0o640)
		if f != nil {
			f.Close()
		}
		for what, err := range map[string]error{"CheckWrite": cerr, "OpenAppend": oerr} {
			switch {
			case tt.reason == "" && err != nil:
				t.Errorf("%s(%s) = %v, want success", what, tt.path, err)
			case tt.reason != "" && (err == nil || !strings.Contains(err.Error(), tt.reason)):
				t.Errorf("%s(%s) = %v, want …%s…", what, tt.path, err, tt.reason)
			}
		}
		if r := (*RefusedError)(nil); errors.As(oerr, &r) && r.Path != tt.path && !strings.HasPrefix(tt.path, r.Path) {
			t.Errorf("refusal names %s, not %s or its directory", r.Path, tt.path)
		}
	}
	// A FIFO with a reader is a valid output.
	go func() { os.ReadFile(fifo) }()
	if err := CheckWrite(fifo); err != nil {
		t.Errorf("CheckWrite(fifo) = %v", err)
	}
	f, err := OpenAppend(fifo, 0o640)
	if err != nil {
		t.Fatalf("OpenAppend(fifo) = %v", err)
	}
	f.Close()
}

func TestCheckMode(t *testing.T) {
	for m, ok := range map[fs.FileMode]bool{
		0o640: true, 0o600: true, 0o644: true, 0o400: true, 0o604: true,
		0o660: false, 0o666: false, 0o602: false, 0o700: false, 0o777: false, 0o4600: false, 0o1640: false,
	} {
		if err := CheckMode(m); (err == nil) != ok {
			t.Errorf("CheckMode(%#o) = %v", uint32(m), err)
		}
	}
}
