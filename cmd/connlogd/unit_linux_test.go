//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// systemdAnalyze finds systemd-analyze, failing under CI where it must be.
func systemdAnalyze(t *testing.T) string {
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatal("systemd-analyze not installed")
		}
		t.Skip("systemd-analyze not installed")
	}
	return p
}

// unitForTest copies the shipped unit with ExecStart pointing at the
// binary under test, since verify checks that the command exists.
func unitForTest(t *testing.T) string {
	b, err := os.ReadFile("../../systemd/connlogd.service")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "connlogd.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/connlogd", connlogdBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUnitVerifies(t *testing.T) {
	sa := systemdAnalyze(t)
	out, err := exec.Command(sa, "verify", unitForTest(t)).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for connlogd\.service: ([0-9.]+)`)

func TestUnitExposure(t *testing.T) {
	sa := systemdAnalyze(t)
	out, err := exec.Command(sa, "security", "--offline=yes", unitForTest(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure %.1f", level)
	if level > 2.0 {
		t.Errorf("exposure %.1f, want <= 2.0:\n%s", level, out)
	}
}
