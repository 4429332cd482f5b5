package sink

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/safefile"
)

func fileSink(t *testing.T, path string, mode fs.FileMode) *Tee {
	t.Helper()
	tee, err := New([]config.Sink{{Type: config.SinkFile, Path: path, Mode: mode}}, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tee.Close() })
	return tee
}

// gapAt is a distinguishable one-line event.
func gapAt(reason string) *event.Event {
	return &event.Event{Kind: event.Gap, Time: t0, Reason: reason}
}

func writeAll(t *testing.T, tee *Tee, reasons ...string) {
	t.Helper()
	for _, r := range reasons {
		if err := tee.Write(gapAt(r)); err != nil {
			t.Fatal(err)
		}
	}
}

// eventIDSuffix is the event_id that ends every line.
var eventIDSuffix = regexp.MustCompile(`,"event_id":"[0-9a-f]{32}"}$`)

// reasonsIn returns the reason of every line of path, failing on a line
// that is not a whole event.
func reasonsIn(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("%s ends in a partial line: %q", path, b)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		pre := `{` + tsText + `,"event":"gap","host":"web-1","reason":"`
		l = eventIDSuffix.ReplaceAllString(l, "}")
		if !strings.HasPrefix(l, pre) || !strings.HasSuffix(l, `"}`) {
			t.Fatalf("%s: unexpected line %q", path, l)
		}
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(l, pre), `"}`))
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func TestFileModeOnCreate(t *testing.T) {
	withUmask(t, 0o077) // would make 0640 into 0600
	dir := t.TempDir()
	for _, tt := range []struct {
		mode, want fs.FileMode
	}{{0, 0o640}, {0o644, 0o644}, {0o600, 0o600}} {
		path := filepath.Join(dir, tt.want.String())
		tee := fileSink(t, path, tt.mode)
		writeAll(t, tee, "a")
		if err := tee.Close(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tt.want {
			t.Errorf("mode %v: file has %v, want %v", tt.mode, fi.Mode().Perm(), tt.want)
		}
	}
}

func TestFileExistingKeepsModeAndAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.json")
	tee := fileSink(t, path, 0)
	writeAll(t, tee, "one", "two")
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	// An administrator's chmod stands across restarts.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	tee = fileSink(t, path, 0o644)
	writeAll(t, tee, "three")
	if got := reasonsIn(t, path); len(got) != 2 {
		t.Errorf("lines visible before Sync: %v; want only the first two", got)
	}
	if err := tee.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := reasonsIn(t, path); !equal(got, []string{"one", "two", "three"}) {
		t.Errorf("lines = %v", got)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode of an existing file changed to %v", fi.Mode().Perm())
	}
}

func TestFileReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.json")
	rotated := path + ".1"
	tee := fileSink(t, path, 0)
	writeAll(t, tee, "a", "b")
	if err := tee.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	// Buffered before the reopen: belongs to the old file.
	writeAll(t, tee, "c")
	if err := tee.Reopen(); err != nil {
		t.Fatal(err)
	}
	writeAll(t, tee, "d", "e")
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	if got := reasonsIn(t, rotated); !equal(got, []string{"a", "b", "c"}) {
		t.Errorf("rotated file: %v", got)
	}
	if got := reasonsIn(t, path); !equal(got, []string{"d", "e"}) {
		t.Errorf("new file: %v", got)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != DefaultFileMode {
		t.Errorf("reopened file mode %v", fi.Mode().Perm())
	}
}

func TestFileReopenFailureKeepsOldFile(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "log")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "events.json")
	tee := fileSink(t, path, 0)
	writeAll(t, tee, "a")
	// The directory moves away: the path cannot be created again (even as
	// root), but the open descriptor still works.
	moved := filepath.Join(root, "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	err := tee.Reopen()
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "sink file "+path+": reopen: ") {
		t.Fatalf("Reopen = %v, want a not-exist error naming the sink", err)
	}
	writeAll(t, tee, "b")
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	if got := reasonsIn(t, filepath.Join(moved, "events.json")); !equal(got, []string{"a", "b"}) {
		t.Errorf("old file: %v", got)
	}
}

func TestFileCloseIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.json")
	tee := fileSink(t, path, 0)
	writeAll(t, tee, "a")
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tee.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := tee.Write(gapAt("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := tee.Sync(); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v, want ErrClosed", err)
	}
	if got := reasonsIn(t, path); !equal(got, []string{"a"}) {
		t.Errorf("lines = %v", got)
	}
}

func TestFileOpenError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "events.json")
	_, err := New([]config.Sink{{Type: config.SinkFile, Path: path}}, "h")
	want := "sink file " + path + ": open: no such file or directory"
	if err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("New = %v, want %q", err, want)
	}
}

// flakyWriter accepts up to room bytes, then fails until room is raised.
type flakyWriter struct {
	got  []byte
	room int
}

func (f *flakyWriter) Write(p []byte) (int, error) {
	n := min(len(p), f.room)
	f.got = append(f.got, p[:n]...)
	f.room -= n
	if n < len(p) {
		return n, syscall.ENOSPC
	}
	return n, nil
}

// A short write leaves the rest of the cut line for the next flush: the
// output ends up with every line whole, none twice.
func TestLineWriterShortWrite(t *testing.T) {
	fw := &flakyWriter{room: 10}
	l := newStreamWriter("sink test", fw)
	lines := []string{"first line\n", "second line\n", "third\n"}
	for _, s := range lines[:2] {
		if _, err := l.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	err := l.Sync()
	if !errors.Is(err, syscall.ENOSPC) || !strings.HasPrefix(err.Error(), "sink test: write: ") {
		t.Fatalf("Sync = %v", err)
	}
	if _, err := l.Write([]byte(lines[2])); err != nil {
		t.Fatal(err)
	}
	fw.room = 1 << 20
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, want := string(fw.got), strings.Join(lines, ""); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	if st := l.stats(); st.Written != 3 || st.Dropped != 0 || st.Errors != 1 {
		t.Errorf("stats %+v, want 3 written and the failed write counted", st)
	}
}

// While the output fails, the backlog is bounded: beyond maxPending,
// events are dropped and counted, and Write says so.
func TestLineWriterBacklogBound(t *testing.T) {
	fw := &flakyWriter{}
	l := newStreamWriter("sink test", fw)
	line := []byte(strings.Repeat("x", 999) + "\n")
	var dropped int
	for range 2 * maxPending / len(line) {
		if _, err := l.Write(line); err != nil {
			dropped++
		}
	}
	if st := l.stats(); dropped == 0 || uint64(dropped) != st.Dropped || st.DroppedBy[DropOutputFailed] != st.Dropped {
		t.Errorf("dropped %d, stats %+v", dropped, l.stats())
	}
	if len(l.buf) > maxPending {
		t.Errorf("backlog %d bytes, bound %d", len(l.buf), maxPending)
	}
	fw.room = 1 << 30
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(fw.got), "\n"); uint64(n) != l.stats().Written {
		t.Errorf("%d lines out, %d accepted", n, l.stats().Written)
	}
}

// refusedOpen opens a file sink at path that must be refused with a
// message naming the path and containing reason.
func refusedOpen(t *testing.T, path string, mode fs.FileMode, reason string) {
	t.Helper()
	tee, err := New([]config.Sink{{Type: config.SinkFile, Path: path, Mode: mode}}, "h")
	if err == nil {
		tee.Close()
		t.Fatalf("file sink at %s (mode %#o) opened, want a refusal: %s", path, uint32(mode), reason)
	}
	var r *safefile.RefusedError
	if !errors.As(err, &r) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("New = %v, want a refusal naming %s and saying %q", err, path, reason)
	}
}

// untouched checks that a file the daemon must not write still holds
// want.
func untouched(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("%s was written through a link: %q", path, b)
	}
}

func TestFileRefusesSymlinkLastComponent(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "passwd")
	if err := os.WriteFile(victim, []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "events.json")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	refusedOpen(t, path, 0, "symbolic link")
	untouched(t, victim, "root:x:0:0\n")
	// A dangling link would be created through too.
	dangling := filepath.Join(dir, "dangling.json")
	if err := os.Symlink(filepath.Join(dir, "created-by-root"), dangling); err != nil {
		t.Fatal(err)
	}
	refusedOpen(t, dangling, 0, "symbolic link")
	if _, err := os.Lstat(filepath.Join(dir, "created-by-root")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the target of a dangling link was created: %v", err)
	}
}

// After a rotation, a link planted at the path must not be followed by
// the reopen; the old file stays in use.
func TestFileReopenRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.json")
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tee := fileSink(t, path, 0)
	writeAll(t, tee, "a")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if err := tee.Reopen(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("Reopen = %v, want a refusal of the link", err)
	}
	writeAll(t, tee, "b")
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	untouched(t, victim, "keep\n")
	if got := reasonsIn(t, path+".1"); !equal(got, []string{"a", "b"}) {
		t.Errorf("old file: %v", got)
	}
}

func TestFileRefusesHardLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "shadow")
	if err := os.WriteFile(victim, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "events.json")
	if err := os.Link(victim, path); err != nil {
		t.Fatal(err)
	}
	refusedOpen(t, path, 0, "2 hard links")
	untouched(t, victim, "secret\n")
}

func TestFileRefusesParentWritableByOthers(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mode   fs.FileMode
		uid    int
		gid    int
		reason string // "" when allowed
	}{
		{"world-writable", 0o777, 0, 0, "writable by group or others"},
		{"writable by another group", 0o775, 0, 65534, "writable by group or others (mode 0775, group 65534)"},
		{"owned by another user", 0o755, 65534, 0, "owned by uid 65534"},
		{"sticky and world-writable", 0o777 | fs.ModeSticky, 65534, 0, ""},
		{"root's", 0o755, 0, 0, ""},
		{"writable by group root", 0o775, 0, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "log")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, tt.uid, tt.gid); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "events.json")
			if tt.reason != "" {
				refusedOpen(t, path, 0, tt.reason)
				return
			}
			tee := fileSink(t, path, 0)
			writeAll(t, tee, "a")
			if err := tee.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFileRefusesModeLettingOthersWrite(t *testing.T) {
	dir := t.TempDir()
	for _, m := range []fs.FileMode{0o777, 0o666, 0o662, 0o620, 0o755, 0o700} {
		path := filepath.Join(dir, fmt.Sprintf("events-%o.json", uint32(m)))
		refusedOpen(t, path, m, "mode")
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("mode %#o: a refused file was created", uint32(m))
		}
	}
}

// /dev/null and a pipe to an agent stay usable outputs.
func TestFileAllowsDevicesAndFIFOs(t *testing.T) {
	tee := fileSink(t, "/dev/null", 0)
	writeAll(t, tee, "a")
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "agent.pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := os.ReadFile(fifo)
		got <- b
	}()
	tee = fileSink(t, fifo, 0)
	writeAll(t, tee, "through-the-pipe")
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !strings.Contains(string(b), `"reason":"through-the-pipe"`) {
		t.Errorf("pipe read %q", b)
	}
}
