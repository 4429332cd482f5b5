//go:build linux

package netns_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/netns"
)

func nsID(t *testing.T, path string) netns.ID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return netns.ID{Dev: st.Dev, Ino: st.Ino}
}

func startWatcher(t *testing.T, opts netns.WatchOptions) *netns.LiveWatcher {
	t.Helper()
	w, warns, err := netns.NewWatcher(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	for _, e := range warns {
		t.Fatalf("watcher degraded: %v", e)
	}
	return w
}

// waitChange returns the first change for which ok holds; other changes
// (namespaces other tests make) are skipped.
func waitChange(t *testing.T, w netns.Watcher, what string, ok func(netns.Change) bool) (netns.Change, time.Duration) {
	t.Helper()
	start := time.Now()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case c := <-w.Changes():
			if ok(c) {
				return c, time.Since(start)
			}
		case <-deadline:
			t.Fatalf("%s: not reported", what)
		}
	}
}

// `ip netns add` creates a file in /run/netns, then unshares and mounts
// the namespace on it: the watcher, on the default directories, reports
// it by name once the mount is there.
func TestWatcherSeesIPNetnsAdd(t *testing.T) {
	netnstest.Require(t)
	w := startWatcher(t, netns.WatchOptions{})
	ns := netnstest.New(t)
	id := nsID(t, ns.Path)
	c, took := waitChange(t, w, "ip netns add", func(c netns.Change) bool { return c.NS.ID == id })
	if c.NS.Name != ns.Name || c.NS.Path != ns.Path || c.NS.Host || c.Gone {
		t.Errorf("reported %+v, want name %s at %s", c.NS, ns.Name, ns.Path)
	}
	if c.File != nil {
		c.File.Close()
	}
	t.Logf("reported %v after the namespace was made", took)
	// Its deletion is a hint that it may be gone.
	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	waitChange(t, w, "ip netns del", func(c netns.Change) bool { return c.Gone && c.NS.Path == ns.Path })
}

// A bind directory that does not exist yet is watched for from its
// parent, and a file created there is looked at again until its mount
// is made.
func TestWatcherDirectoryAppearsAndMountComesLate(t *testing.T) {
	netnstest.Require(t)
	src := netnstest.New(t)
	dir := filepath.Join(t.TempDir(), "a", "b", "netns")
	w := startWatcher(t, netns.WatchOptions{Dirs: []string{dir}})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "late")
	// The file may beat the directory's watch: the scan made when the
	// directory's creation is seen covers it, and waits for its mount.
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond) // the mount comes after the file, as with ip netns add
	if err := unix.Mount(src.Path, file, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(file, unix.MNT_DETACH) })
	id := nsID(t, src.Path)
	c, took := waitChange(t, w, "late bind mount", func(c netns.Change) bool { return c.NS.ID == id })
	if c.NS.Path != file || c.NS.Name != "" {
		t.Errorf("reported %+v, want unnamed at %s", c.NS, file)
	}
	t.Logf("reported %v after the directory was made", took)
}

// A namespace bound nowhere is reported when its first process execs.
func TestWatcherSeesUnshare(t *testing.T) {
	netnstest.Require(t)
	w := startWatcher(t, netns.WatchOptions{Dirs: []string{}, Procs: true})
	cmd := exec.Command("unshare", "-n", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	path := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	// The process may not have unshared yet: look at it until it has.
	var id netns.ID
	host := nsID(t, "/proc/self/ns/net")
	for deadline := time.Now().Add(20 * time.Second); ; {
		if id = nsID(t, path); id != host {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare -n did not leave the host namespace")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c, took := waitChange(t, w, "unshare -n", func(c netns.Change) bool { return c.NS.ID == id })
	if c.NS.Name != "" || c.NS.Host || c.File == nil {
		t.Fatalf("reported %+v", c)
	}
	defer c.File.Close()
	// The process exits before the receiver gets to the namespace: the
	// change's descriptor still leads into it.
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(path); err == nil {
		t.Fatal("the process's namespace file outlived it: the check below proves nothing")
	}
	if got := nsID(t, c.FilePath()); got != id {
		t.Errorf("FilePath leads to %v, want %v", got, id)
	}
	// The exit of the process it was seen in is a hint that it may be gone.
	waitChange(t, w, "exit of the namespace's first process", func(c netns.Change) bool { return c.Gone && c.NS.ID == id })
	if st := w.Stats(); st.ProcEvents == 0 || st.Reported == 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("reported %v after start", took)
}

// A bind file whose mount is not made yet is no namespace to Discover or
// Resolve.
func TestUnmountedBindFileIsNoNamespace(t *testing.T) {
	netnstest.Require(t)
	if err := os.MkdirAll(netns.RunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := "connlogd-test-unmounted-" + strconv.Itoa(os.Getpid())
	path := filepath.Join(netns.RunDir, name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	if _, err := netns.Resolve(name); err == nil {
		t.Error("Resolve took an empty file for a namespace")
	}
	all, err := netns.Discover()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range all {
		if ns.Name == name {
			t.Errorf("Discover listed %+v", ns)
		}
	}
}

// Without CAP_NET_ADMIN the process events cannot be had: the watcher
// says so in one warning naming the capability, and still watches the
// bind directories. The test runs itself again under capsh, which drops
// the capability.
func TestWatcherWithoutNetAdmin(t *testing.T) {
	if os.Getenv("CONNLOGD_TEST_NO_NET_ADMIN") == "1" {
		w, warns, err := netns.NewWatcher(netns.WatchOptions{Procs: true})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if len(warns) != 1 || !strings.Contains(warns[0].Error(), "needs CAP_NET_ADMIN") || !strings.Contains(warns[0].Error(), "periodic rescan") {
			t.Fatalf("warnings %v, want one naming CAP_NET_ADMIN and the fallback", warns)
		}
		return
	}
	netnstest.Require(t)
	capsh, err := exec.LookPath("capsh")
	if err != nil {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatal("needs capsh (libcap2-bin) to drop CAP_NET_ADMIN")
		}
		t.Skip("needs capsh (libcap2-bin) to drop CAP_NET_ADMIN")
	}
	cmd := exec.Command(capsh, "--drop=cap_net_admin", "--", "-c", `exec "$0" -test.run '^TestWatcherWithoutNetAdmin$' -test.v`, os.Args[0])
	cmd.Env = append(os.Environ(), "CONNLOGD_TEST_NO_NET_ADMIN=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestWatcherWithoutNetAdmin") {
		t.Fatalf("without CAP_NET_ADMIN: %v\n%s", err, out)
	}
}

// A namespace bound in a watched directory, whose first process start is
// seen before any change of the directory tells of it (here the file
// existed, unmounted, when the watch began, and a mount makes no inotify
// event), is reported with its name: `ip netns add` binds before `ip
// netns exec` enters, and the events of that first moment are named.
func TestWatcherNamesAProcessNamespaceBoundAlready(t *testing.T) {
	netnstest.Require(t)
	src := netnstest.New(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "early")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, netns.WatchOptions{Dirs: []string{dir}, Procs: true})
	if err := unix.Mount(src.Path, file, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(file, unix.MNT_DETACH) })
	id := nsID(t, src.Path)
	cmd := exec.Command("nsenter", "--net="+file, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c, _ := waitChange(t, w, "the process in the bound namespace", func(c netns.Change) bool { return c.NS.ID == id })
	if c.File != nil {
		defer c.File.Close()
	}
	if c.NS.Name != "early" {
		t.Errorf("reported %+v, want it named early", c.NS)
	}
}
