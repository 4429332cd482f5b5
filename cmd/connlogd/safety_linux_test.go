//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
