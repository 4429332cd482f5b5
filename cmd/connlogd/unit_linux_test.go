//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connlogd/connlogd/internal/systemdtest"
)

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
	systemdtest.Verify(t, unitForTest(t))
}

func TestUnitExposure(t *testing.T) {
	level, report := systemdtest.Exposure(t, unitForTest(t))
	t.Logf("exposure %.1f", level)
	if level > 2.0 {
		t.Errorf("exposure %.1f, want <= 2.0:\n%s", level, report)
	}
}
