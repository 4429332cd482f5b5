package version

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestStamp builds a program with the linker flags packaging/build.sh
// passes and checks they reach Version and Commit: a renamed variable
// would otherwise leave every package saying "(devel)" without an error.
func TestStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	const pkg = "github.com/connlogd/connlogd/internal/version"
	bin := t.TempDir() + "/stamped"
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X "+pkg+".version=1.2.3+git4.abcdef0 -X "+pkg+".commit=abcdef0123",
		"./testdata/stamped")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "1.2.3+git4.abcdef0 abcdef0123 " + runtime.Version()
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("stamped binary says %q, want %q", got, want)
	}
}

// TestUnstamped: a test binary carries no stamp and no module version,
// so it must say so rather than print an empty version.
func TestUnstamped(t *testing.T) {
	if v := Version(); v == "" {
		t.Error("Version is empty without a stamp")
	}
	if c := Commit(); c == "" {
		t.Error("Commit is empty without a stamp")
	}
	if Go() != runtime.Version() {
		t.Errorf("Go() = %q", Go())
	}
}
