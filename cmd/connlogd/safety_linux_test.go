//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
)

// exitOf runs cmd and returns its exit status and stderr; -1 when it was
// still running at the deadline (it started).
func exitOf(t *testing.T, cmd *exec.Cmd, deadline time.Duration) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, stderr.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), stderr.String()
		}
		t.Fatal(err)
	case <-time.After(deadline):
		cmd.Process.Kill()
		<-done
	}
	return -1, stderr.String()
}

// TestCheckConfigSaysWhatStartSays: for each configuration, -check-config
// and a start give the same verdict with the same message. Each case
// used to pass -check-config and then fail at start, or worse, start.
func TestCheckConfigSaysWhatStartSays(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard.json")
	if err := os.Link(victim, hard); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "events.json")
	tls := func(ca string) string {
		return "sinks:\n  - {type: syslog, network: tls, address: '127.0.0.1:6514', tls: {ca_file: " + ca + "}}\n"
	}
	for _, c := range []struct{ name, body, want string }{
		{"metrics port not a number", "metrics: {listen: ':abc'}\nsinks: [{type: file, path: " + out + "}]\n", `port "abc" is neither a number`},
		{"missing ca_file", tls(dir + "/none.pem"), "tls.ca_file: open " + dir + "/none.pem: no such file or directory"},
		{"ca_file not PEM", tls("/etc/passwd"), "tls.ca_file: /etc/passwd: no PEM certificate found"},
		{"file sink in a missing directory", "sinks: [{type: file, path: " + dir + "/missing/events.json}]\n", "stat " + dir + "/missing: no such file or directory"},
		{"tag with a colon", "sinks:\n  - {type: syslog, tag: 'app:1'}\n", `"app:1" must be printable ASCII without spaces, brackets or colons`},
		{"file sink through a symlink", "sinks: [{type: file, path: " + link + "}]\n", link + ": refused: is a symbolic link"},
		{"file sink on a hard link", "sinks: [{type: file, path: " + hard + "}]\n", hard + ": refused: regular file has 2 hard links"},
		{"file sink in a world-writable directory", "sinks: [{type: file, path: " + open + "/events.json}]\n", open + ": refused: directory is writable by group or others"},
		{"file sink mode 0777", "sinks: [{type: file, path: " + out + ", mode: 0777}]\n", "mode: 0777: only read and write bits"},
		{"state file in a missing directory", "state_file: " + dir + "/nostate/state.json\nsinks: [{type: file, path: " + out + "}]\n", "state_file: stat " + dir + "/nostate"},
		{"otlp ca_file missing", "sinks: [{type: otlp, endpoint: 'https://127.0.0.1:4318', tls: {ca_file: " + dir + "/none.pem}}]\n", "tls.ca_file: open " + dir + "/none.pem: no such file or directory"},
		{"spool directory through a symlink", "sinks: [{type: otlp, endpoint: 'http://127.0.0.1:4318', spool: {dir: " + link + "}}]\n", "spool " + link + ": open: not a directory (a symbolic link is never followed)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(cfg, []byte(c.body), 0o644); err != nil {
				t.Fatal(err)
			}
			checkCode, checkMsg := exitOf(t, exec.Command(connlogdBin, "-check-config", "-config", cfg), time.Minute)
			startCode, startMsg := exitOf(t, ns.Command(connlogdBin, "-config", cfg), 20*time.Second)
			if checkCode != 1 || !strings.Contains(checkMsg, c.want) {
				t.Errorf("-check-config: exit %d, %q; want exit 1 and …%s…", checkCode, checkMsg, c.want)
			}
			if startCode != 1 || startMsg != checkMsg {
				t.Errorf("start: exit %d, %q; want exit 1 and what -check-config said, %q", startCode, startMsg, checkMsg)
			}
		})
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("a refused start wrote through a link: %q", b)
	}
}

// A device as the configuration is refused at once: /dev/zero used to
// be read until memory ran out.
func TestCheckConfigDevZero(t *testing.T) {
	code, msg := exitOf(t, exec.Command(connlogdBin, "-check-config", "-config", "/dev/zero"), time.Minute)
	if code != 1 || !strings.Contains(msg, "/dev/zero: refused: not a regular file") {
		t.Errorf("exit %d, %q", code, msg)
	}
}

// A namespace that does not exist yet is a warning, not an error: it may
// be created after the daemon starts.
func TestCheckConfigWarnsMissingNamespace(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("namespaces: [host, connlogd-no-such-ns]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, connlogdBin, "-check-config", "-config", cfg)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("-check-config: %v, %s", err, stderr.String())
	}
	want := `warning: namespaces: "connlogd-no-such-ns" does not exist yet`
	if !strings.Contains(stderr.String(), want) || !strings.Contains(stdout.String(), "configuration is valid") {
		t.Errorf("stdout %q, stderr %q; want valid, and a warning …%s…", stdout.String(), stderr.String(), want)
	}
}

// A reload checks what start checks: a configuration start would refuse
// is refused with the same reason, and the running one stays.
func TestReloadRefusesWhatStartRefuses(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	out := filepath.Join(dir, "events.json")
	victim := filepath.Join(dir, "victim")
	writeFile(t, victim, "keep\n")
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, "interval: 200ms\nsinks:\n  - type: file\n    path: "+out+"\n")
	d := startWith(t, ns, cfg, out)
	waitLog(t, d, "msg=watching ", 1, time.Minute)
	for i, c := range []struct{ sinks, want string }{
		{"  - {type: file, path: " + link + "}\n", link + ": refused: is a symbolic link"},
		{"  - {type: file, path: " + open + "/events.json}\n", open + ": refused: directory is writable by group or others"},
		{"  - {type: file, path: " + dir + "/world.json, mode: 0666}\n", "mode: 0666 lets group or others write"},
		{"  - {type: file, path: " + out + "}\nstate_file: " + dir + "/nostate/state.json\n", "state_file: stat " + dir + "/nostate"},
	} {
		replaceFile(t, cfg, "interval: 200ms\nsinks:\n"+c.sinks)
		waitLog(t, d, "configuration refused", i+1, time.Minute)
		if !strings.Contains(d.logs(), c.want) {
			t.Errorf("reload %d refused without …%s…; stderr:\n%s", i, c.want, d.logs())
		}
	}
	if strings.Contains(d.logs(), "configuration reloaded") {
		t.Errorf("a bad configuration was applied; stderr:\n%s", d.logs())
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("written through a link: %q", b)
	}
	for _, p := range []string{open + "/events.json", dir + "/world.json"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("a refused sink created %s", p)
		}
	}
}

// nsID returns the device and inode numbers of a namespace's nsfs file,
// as the daemon identifies namespaces in its state file.
func nsID(t *testing.T, ns *netnstest.NS) (dev, ino uint64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(ns.Path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}

func bootIDNow(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A state file someone edited: records no kernel reports are skipped in
// one warning and never become events; three records of one cookie are
// one socket.
func TestHostileStateFile(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	dev, ino := nsID(t, ns)
	rec := func(cookie, proto, family, state int, dst string) string {
		return fmt.Sprintf(`{"Socket":{"Proto":%d,"Family":%d,"Cookie":%d,"Src":"127.0.0.1:1","Dst":%q,"State":%d},"FirstSeen":"2026-01-01T00:00:00Z"}`,
			proto, family, cookie, dst, state)
	}
	recs := []string{
		rec(900001, 99, 2, 1, "127.0.0.1:2"),
		rec(900002, 6, 77, 1, "127.0.0.1:2"),
		rec(900003, 6, 2, 255, "127.0.0.1:2"),
		rec(900004, 6, 2, 1, "127.0.0.1:4"),
		rec(900004, 6, 2, 1, "127.0.0.1:5"),
		rec(900004, 6, 2, 1, "127.0.0.1:6"),
	}
	writeFile(t, state, fmt.Sprintf(`{"version":1,"boot_id":%q,"saved_at":%q,"namespaces":[{"dev":%d,"ino":%d,"sockets":[%s]}]}`,
		bootIDNow(t), time.Now().UTC().Add(-time.Second).Format(time.RFC3339Nano), dev, ino, strings.Join(recs, ",")))
	cfg := filepath.Join(dir, "config.yaml")
	out := filepath.Join(dir, "events.json")
	writeFile(t, cfg, "interval: 200ms\nstate_file: "+state+"\nsinks:\n  - type: file\n    path: "+out+"\n")
	d := startWith(t, ns, cfg, out)
	d.waitFor("the late close of the one valid socket", time.Minute, func(evs []ev) bool {
		for _, e := range evs {
			if e.num("cookie") == 900004 && e.str("event") == "closed" {
				return true
			}
		}
		return false
	})
	time.Sleep(time.Second) // a few polls more: nothing else may come of the file
	evs := d.events()
	for _, e := range evs {
		if strings.HasPrefix(e.str("proto"), "proto") || strings.HasPrefix(e.str("family"), "family") || strings.HasPrefix(e.str("state"), "state") {
			t.Errorf("event from a hostile record: %v", e)
		}
		if c := e.num("cookie"); c >= 900001 && c <= 900003 {
			t.Errorf("event from a hostile record: %v", e)
		}
	}
	n := 0
	for _, e := range evs {
		if e.num("cookie") == 900004 {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d events for the cookie given three times, want 1 closed", n)
	}
	logs := d.logs()
	if strings.Count(logs, "records skipped") != 1 || !strings.Contains(logs, "skipped=3") || !strings.Contains(logs, "duplicates=2") || !strings.Contains(logs, "restored_sockets=1") {
		t.Errorf("want one warning with skipped=3 duplicates=2, and restored_sockets=1; stderr:\n%s", logs)
	}
}

// An oversized state file is refused from its size, at once; one behind
// a symlink is not read, and its target is left alone.
func TestStateFileBoundsAndLinks(t *testing.T) {
	ns := netnstest.New(t)
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, state string) (keep string)
		want  string
	}{
		{"oversized", func(t *testing.T, state string) string {
			f, err := os.Create(state)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(1 << 30); err != nil { // sparse: 1 GiB of nothing
				t.Fatal(err)
			}
			return ""
		}, "file too large"},
		{"symlink", func(t *testing.T, state string) string {
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			writeFile(t, target, `{"version":1,"boot_id":"x","saved_at":"2026-01-01T00:00:00Z","namespaces":[]}`)
			if err := os.Symlink(target, state); err != nil {
				t.Fatal(err)
			}
			return target
		}, "refused: is a symbolic link"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(dir, "state.json")
			keep := c.setup(t, state)
			cfg := filepath.Join(dir, "config.yaml")
			out := filepath.Join(dir, "events.json")
			writeFile(t, cfg, "interval: 200ms\nstate_file: "+state+"\nsinks:\n  - type: file\n    path: "+out+"\n")
			d := startWith(t, ns, cfg, out)
			waitLog(t, d, "msg=watching ", 1, time.Minute)
			if logs := d.logs(); !strings.Contains(logs, c.want) || !strings.Contains(logs, "starting afresh") {
				t.Errorf("want a warning …%s… and a fresh start; stderr:\n%s", c.want, logs)
			}
			if keep != "" {
				if _, err := os.Stat(keep); err != nil {
					t.Errorf("the link's target was touched: %v", err)
				}
			}
		})
	}
}

// metricsAnswers reports whether something accepts a TCP connection at
// addr, dialled from inside ns.
func metricsAnswers(ns *netnstest.NS, network, addr string) bool {
	return ns.Do(func() error {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}) == nil
}

// The metrics endpoint listens on the family its address names and no
// more: 0.0.0.0:P is IPv4 only, [::]:P IPv6 only, :P both.
func TestMetricsBindFamilies(t *testing.T) {
	ns := netnstest.New(t)
	for _, c := range []struct {
		listen   string
		v4, v6   bool
		v4d, v6d string // the addresses dialled
	}{
		{"0.0.0.0:9481", true, false, "127.0.0.1:9481", "[::1]:9481"},
		{"[::]:9482", false, true, "127.0.0.1:9482", "[::1]:9482"},
		{":9483", true, true, "127.0.0.1:9483", "[::1]:9483"},
	} {
		t.Run(c.listen, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.yaml")
			out := filepath.Join(dir, "events.json")
			writeFile(t, cfg, "interval: 200ms\nmetrics: {listen: '"+c.listen+"'}\nsinks:\n  - type: file\n    path: "+out+"\n")
			d := startWith(t, ns, cfg, out)
			waitLog(t, d, "msg=watching ", 1, time.Minute)
			if got := metricsAnswers(ns, "tcp4", c.v4d); got != c.v4 {
				t.Errorf("listen %s: IPv4 %s answers: %v, want %v", c.listen, c.v4d, got, c.v4)
			}
			if got := metricsAnswers(ns, "tcp6", c.v6d); got != c.v6 {
				t.Errorf("listen %s: IPv6 %s answers: %v, want %v", c.listen, c.v6d, got, c.v6)
			}
			d.stop()
		})
	}
}

// As a user without CAP_SYS_ADMIN, with a list of namespaces that does
// not name the host: the daemon says it watches none of them, instead of
// claiming to watch the host namespace.
func TestNonRootNamespaceList(t *testing.T) {
	ns := netnstest.New(t)
	other := netnstest.New(t)
	dir, err := os.MkdirTemp("", "connlogd-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "connlogd")
	b, err := os.ReadFile(connlogdBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(dir, "log")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(logDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	out := filepath.Join(logDir, "events.json")
	writeFile(t, cfg, "interval: 200ms\nnamespaces: ["+other.Name+"]\nsinks:\n  - type: file\n    path: "+out+"\n")
	d := &proc{t: t, out: out, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	d.cmd = ns.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin, "-config", cfg)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop() })
	waitLog(t, d, "msg=watching ", 1, time.Minute)
	logs := d.logs()
	if strings.Contains(logs, "watching the host namespace only") {
		t.Errorf("claims to watch the host namespace, which is not listed; stderr:\n%s", logs)
	}
	if !strings.Contains(logs, "not_watched="+other.Name) || !strings.Contains(logs, "watching=none") {
		t.Errorf("want a warning naming %s as not watched and saying nothing is watched; stderr:\n%s", other.Name, logs)
	}
}

// The exit status on SIGTERM: 1 when the final flush fails (here a file
// sink on /dev/full), as the README says; every other test's stop checks
// the 0 of a clean stop.
func TestExitStatusWhenFinalFlushFails(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "interval: 200ms\nsinks:\n  - type: file\n    path: /dev/full\n")
	d := startWith(t, ns, cfg, "/dev/full")
	waitLog(t, d, "msg=watching ", 1, time.Minute)
	ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln.Close()
	waitLog(t, d, "failed", 1, time.Minute)
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(time.Minute):
		t.Fatalf("no exit within a minute of SIGTERM; stderr:\n%s", d.logs())
	}
	var ee *exec.ExitError
	if !errors.As(d.err, &ee) || ee.ExitCode() != 1 || !strings.Contains(d.logs(), "flush sinks") {
		t.Errorf("exit %v, want status 1 after a failed final flush; stderr:\n%s", d.err, d.logs())
	}
}
