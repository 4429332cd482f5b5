//go:build linux

package main

import (
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

// TestCheckConfig runs -check-config on good and bad files: exit 0 or 1,
// and each bad case gets one line naming its file and line.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, body string
		code       int
		want       string
	}{
		{"good", "interval: 200ms\nsinks:\n  - type: stdout\n", 0, "configuration is valid"},
		{"example", "", 0, "configuration is valid"},
		{"unknown key", "interval: 1s\nintervall: 2s\n", 1, "bad.yaml:2: "},
		{"duplicate key", "interval: 1s\nprotocols: [tcp]\ninterval: 2s\n", 1, "bad.yaml:3: "},
		{"bad value", "interval: soon\n", 1, "bad.yaml:1: "},
		{"empty", "", 1, "bad.yaml:1: "},
		{"second document", "interval: 1s\n---\ninterval: 2s\n", 1, "bad.yaml:2: "},
		{"bad sink", "sinks:\n  - type: file\n", 1, "bad.yaml:2: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "bad.yaml")
			if c.name == "example" {
				path = "../../config.example.yaml"
			} else if err := os.WriteFile(path, []byte(c.body), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(connlogdBin, "-check-config", "-config", path)
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			text := strings.TrimRight(string(out), "\n")
			if code != c.code || !strings.Contains(text, c.want) || strings.Contains(text, "\n") {
				t.Errorf("exit %d, output %q; want exit %d, one line containing %q", code, text, c.code, c.want)
			}
		})
	}
	out, err := exec.Command(connlogdBin, "-config", filepath.Join(dir, "missing.yaml")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "missing.yaml") {
		t.Errorf("a missing -config file: err %v, output %q; want an error naming it", err, out)
	}
}

// TestReopenOnSIGUSR1 rotates the file sink the way logrotate's create
// mode does: rename, signal, and the next events land in a new file.
func TestReopenOnSIGUSR1(t *testing.T) {
	ns := netnstest.New(t)
	d := startDaemon(t, ns, "")
	ln1 := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln1.Close()
	p1 := ln1.Addr().(*net.TCPAddr).Port
	d.waitFor("first listener", 5*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", p1)) > 0 })
	rotated := d.out + ".1"
	if err := os.Rename(d.out, rotated); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	ln2 := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln2.Close()
	p2 := ln2.Addr().(*net.TCPAddr).Port
	evs := d.waitFor("second listener in the new file", 5*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", p2)) > 0 })
	if len(match(evs, "appeared", "tcp", p1)) != 0 {
		t.Errorf("the new file repeats the old events")
	}
	if fi, err := os.Stat(d.out); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new file: %v, mode %v; want 0640", err, fi.Mode().Perm())
	}
	old, err := os.ReadFile(rotated)
	if err != nil || !strings.HasSuffix(string(old), "\n") || strings.Contains(string(old), `"src_port":`+itoa(p2)+`,`) {
		t.Errorf("rotated file: err %v; want whole lines, none of the new events", err)
	}
}

func itoa(i int) string { return strings.TrimSpace(string(mustJSON(i))) }

// TestFilteredDaemon: with an include rule on local ports, only matching
// sockets are reported, from polls and from destroy notifications alike.
// On the harness's quick poll, and on the default interval.
func TestFilteredDaemon(t *testing.T) {
	eachInterval(t, testFilteredDaemon)
}

func testFilteredDaemon(t *testing.T, cfg string) {
	ns := netnstest.New(t)
	var keep, drop net.Listener
	if err := ns.Do(func() (err error) {
		if keep, err = net.Listen("tcp4", "127.0.0.1:1500"); err != nil {
			return err
		}
		drop, err = net.Listen("tcp4", "127.0.0.1:2500")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer drop.Close()
	d := startCase(t, ns, cfg+"filters:\n  include:\n    - local_ports: [\"1000-2000\"]\n")
	d.waitFor("kept listener", 30*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", 1500)) > 0 })
	keep.Close()
	drop.Close()
	d.waitFor("kept listener closed", 30*time.Second, func(evs []ev) bool { return len(match(evs, "closed", "tcp", 1500)) > 0 })
	time.Sleep(500 * time.Millisecond)
	for _, e := range d.events() {
		if e.str("event") == "gap" {
			continue // about no socket: filters leave gaps alone
		}
		if int(e.num("src_port")) != 1500 {
			t.Errorf("filtered-out socket reported: %v", e)
		}
	}
}
