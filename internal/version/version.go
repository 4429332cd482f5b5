// Package version owns connlogd's version: the release or commit it was
// built from, stamped by the linker, so that `connlogd -version`, the
// starting log line, the metrics' build label and the product version in
// ECS and OCSF events all say the same thing.
//
// packaging/build.sh stamps both values:
//
//	go build -ldflags "-X github.com/connlogd/connlogd/internal/version.version=1.2.0
//	                   -X github.com/connlogd/connlogd/internal/version.commit=<full hash>"
//
// A binary built without them (go build, go run) falls back to what the Go
// toolchain recorded: the module version for `go install …@v1.2.0`, the
// VCS revision when it was stamped, and otherwise "(devel)".
package version

import (
	"runtime"
	"runtime/debug"
)

// Set by the linker (-X); empty in a plain `go build`.
var (
	version string
	commit  string
)

// Version is connlogd's version: a release such as 1.2.0, a commit build
// such as 1.2.0+git5.abc1234 (five commits after 1.2.0) or
// 0.0.0+git123.abc1234 (no release yet), or "(devel)" when unknown.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// Commit is the full hash of the commit connlogd was built from, with
// "-dirty" when the tree had uncommitted changes, or "unknown".
func Commit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

// Go is the version of the Go toolchain that built connlogd.
func Go() string {
	return runtime.Version()
}
