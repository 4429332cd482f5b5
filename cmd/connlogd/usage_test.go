package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/connlogd/connlogd/config"
)

// -h is a request, not an error: exit 0, and name the configuration file,
// the signals and the documentation besides the flags.
func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if rc := realMain([]string{"-h"}, &stdout, &stderr); rc != 0 {
		t.Errorf("-h exits %d, want 0", rc)
	}
	help := stderr.String()
	for _, want := range []string{
		"Usage: connlogd", "-check-config", "-config", "-once", "-version",
		config.DefaultPath, "SIGTERM", "SIGHUP", "SIGUSR1",
		"connlogd(8)", "connlogd.yaml(5)", "/usr/share/doc/connlogd/",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("-h does not mention %q:\n%s", want, help)
		}
	}
}

// A wrong flag is an error (exit 2) that still shows the usage.
func TestBadFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if rc := realMain([]string{"-nope"}, &stdout, &stderr); rc != 2 {
		t.Errorf("-nope exits %d, want 2", rc)
	}
	if !strings.Contains(stderr.String(), "Usage: connlogd") {
		t.Errorf("no usage after a bad flag:\n%s", stderr.String())
	}
}

func TestVersionLines(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if rc := realMain([]string{"-version"}, &stdout, &stderr); rc != 0 {
		t.Fatalf("-version exits %d: %s", rc, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "connlogd ") ||
		!strings.HasPrefix(lines[1], "commit ") || lines[2] != runtime.Version() {
		t.Errorf("-version printed %q, want the version, the commit and %s on three lines", stdout.String(), runtime.Version())
	}
}
