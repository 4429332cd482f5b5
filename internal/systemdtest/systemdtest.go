// Package systemdtest checks a systemd unit with systemd-analyze, for the
// tests of the unit in systemd/ and of the one the packages install: that
// it verifies cleanly, and that its exposure stays within a bound. Without
// systemd-analyze the tests skip, unless CONNLOGD_REQUIRE_NETNS=1 (set by
// CI) makes that a failure.
package systemdtest

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Analyze finds systemd-analyze, skipping the test (failing it under CI)
// where it is missing.
func Analyze(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatal("systemd-analyze not installed")
		}
		t.Skip("systemd-analyze not installed")
	}
	return p
}

// Verify runs systemd-analyze verify on the unit file, which must say
// nothing. The file's ExecStart= commands must exist on this machine.
func Verify(t testing.TB, unit string) {
	t.Helper()
	out, err := exec.Command(Analyze(t), "verify", unit).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
}

// Exposure is the unit's overall exposure level from systemd-analyze
// security --offline=yes (0 is the best, 10 the worst), and the report
// that explains it. The unit file must be named <name>.service.
func Exposure(t testing.TB, unit string) (float64, string) {
	t.Helper()
	out, err := exec.Command(Analyze(t), "security", "--offline=yes", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security %s: %v\n%s", unit, err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("exposure %q: %v", m[1], err)
	}
	return level, string(out)
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
