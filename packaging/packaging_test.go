//go:build linux

// Package packaging_test builds the packages with packaging/build.sh and
// checks them with the tools their distributions use: lintian and
// rpmlint, dpkg-deb and rpm for their contents, the packaged binary and
// configuration run as installed, systemd-analyze on the packaged unit, a
// real docker daemon for the image, and the DaemonSet's YAML. The tests
// skip where a tool is missing, unless CONNLOGD_REQUIRE_NETNS=1 (set by
// CI) makes that a failure; .ci/run installs them.
package packaging_test

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/connlogd/connlogd/internal/dockertest"
	"github.com/connlogd/connlogd/internal/systemdtest"
)

// require skips the test (fails it under CI) when a command is missing or
// the test is not root.
func require(t *testing.T, root bool, commands ...string) {
	t.Helper()
	var missing []string
	for _, c := range commands {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	why := ""
	if len(missing) > 0 {
		why = "missing " + strings.Join(missing, ", ")
	} else if root && os.Geteuid() != 0 {
		why = "needs root"
	}
	if why == "" {
		return
	}
	if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// built is the output of one run of build.sh, shared by the tests.
type built struct {
	dist, version, deb, rpm string
	// imageTag is the version as a docker tag ("+" is not allowed there).
	imageTag string
	// extracted is the .deb unpacked with dpkg-deb -x.
	extracted string
}

var (
	buildOnce sync.Once
	buildOut  built
	buildErr  error
	tmpRoot   string
)

func TestMain(m *testing.M) {
	var err error
	tmpRoot, err = os.MkdirTemp("", "connlogd-packaging-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// build runs packaging/build.sh once (it takes a while: it compiles nfpm
// the first time) and unpacks the .deb.
func build(t *testing.T) built {
	t.Helper()
	require(t, false, "git", "dpkg-deb")
	buildOnce.Do(func() {
		dist := filepath.Join(tmpRoot, "dist")
		cmd := exec.Command("./build.sh")
		cmd.Dir = "."
		cmd.Env = append(os.Environ(), "DIST="+dist)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build.sh: %v\n%s", err, out)
			return
		}
		v, err := os.ReadFile(filepath.Join(dist, "VERSION"))
		if err != nil {
			buildErr = err
			return
		}
		tag, err := os.ReadFile(filepath.Join(dist, "image-tag"))
		if err != nil {
			buildErr = err
			return
		}
		b := built{dist: dist, version: strings.TrimSpace(string(v)), imageTag: strings.TrimSpace(string(tag))}
		b.deb = filepath.Join(dist, "connlogd_"+b.version+"_amd64.deb")
		b.rpm = filepath.Join(dist, "connlogd-"+b.version+".x86_64.rpm")
		b.extracted = filepath.Join(tmpRoot, "deb")
		if out, err := exec.Command("dpkg-deb", "-x", b.deb, b.extracted).CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("dpkg-deb -x: %v\n%s", err, out)
			return
		}
		buildOut = b
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildOut
}

// versionRE is what build.sh may stamp: a release, or a commit build that
// says so (commits since the release and the commit), maybe dirty.
var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(\+git[0-9]+\.[0-9a-f]{7,}(\.dirty)?)?$`)

func TestVersionStamped(t *testing.T) {
	b := build(t)
	if !versionRE.MatchString(b.version) {
		t.Errorf("build.sh stamped version %q, want X.Y.Z or X.Y.Z+gitN.HASH", b.version)
	}
	head, err := exec.Command("git", "rev-parse", "--short=7", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.version, "+git") {
		if _, err := exec.Command("git", "describe", "--tags", "--exact-match", "--match", "v[0-9]*", "HEAD").Output(); err != nil {
			t.Errorf("version %q looks like a release, but HEAD has no release tag", b.version)
		}
	} else if !strings.Contains(b.version, "."+strings.TrimSpace(string(head))) {
		t.Errorf("commit build %q does not name HEAD %s", b.version, head)
	}
}

// TestVersionFromGit runs build.sh's version logic in a clone: before the
// first tag, on a tag, after it, and with uncommitted changes.
func TestVersionFromGit(t *testing.T) {
	require(t, false, "git")
	dir := filepath.Join(t.TempDir(), "clone")
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@example.invalid"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "clone", "-q", "--no-tags", "..", dir).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	version := func() string {
		t.Helper()
		cmd := exec.Command("./packaging/build.sh", "--print-version")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CONNLOGD_VERSION=")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("build.sh --print-version: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	// The clone has the committed build.sh: commit the one under test.
	script, err := os.ReadFile("build.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "packaging/build.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	git("commit", "-q", "--allow-empty", "-a", "-m", "the build.sh under test")
	count := git("rev-list", "--count", "HEAD")
	if got, want := version(), "0.0.0+git"+count+"."+git("rev-parse", "--short=7", "HEAD"); got != want {
		t.Errorf("before any tag: %q, want %q", got, want)
	}
	git("tag", "v1.2.0")
	if got := version(); got != "1.2.0" {
		t.Errorf("on tag v1.2.0: %q, want 1.2.0", got)
	}
	git("commit", "-q", "--allow-empty", "-m", "after the release")
	if got, want := version(), "1.2.0+git1."+git("rev-parse", "--short=7", "HEAD"); got != want {
		t.Errorf("a commit after v1.2.0: %q, want %q", got, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := version(); !strings.HasSuffix(got, ".dirty") {
		t.Errorf("with a changed tracked file: %q, want .dirty at the end", got)
	}
}

// TestReproducible builds a second time: the same commit must give the
// same packages, byte for byte (build.sh's SOURCE_DATE_EPOCH).
func TestReproducible(t *testing.T) {
	b := build(t)
	dist := filepath.Join(t.TempDir(), "dist")
	cmd := exec.Command("./build.sh")
	cmd.Env = append(os.Environ(), "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	for _, p := range []string{b.deb, b.rpm, filepath.Join(b.dist, "connlogd")} {
		first, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		second, err := os.ReadFile(filepath.Join(dist, filepath.Base(p)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Errorf("%s differs between two builds of the same commit", filepath.Base(p))
		}
	}
}

func TestLintian(t *testing.T) {
	require(t, false, "lintian")
	b := build(t)
	out, err := exec.Command("lintian", "--tag-display-limit", "0", "--fail-on", "error,warning", b.deb).CombinedOutput()
	var tags []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "W: ") {
			tags = append(tags, l)
		}
	}
	if err != nil || len(tags) > 0 {
		t.Errorf("lintian: %v\n%s", err, out)
	}
}

func TestRpmlint(t *testing.T) {
	require(t, false, "rpmlint")
	b := build(t)
	out, err := exec.Command("rpmlint", "-r", "rpmlintrc", b.rpm).CombinedOutput()
	if err != nil || !regexp.MustCompile(`\b0 errors\b`).Match(out) {
		t.Errorf("rpmlint: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// docs are the documents both packages install in /usr/share/doc/connlogd.
func docs(t *testing.T) []string {
	t.Helper()
	md, err := filepath.Glob("../docs/*.md")
	if err != nil || len(md) == 0 {
		t.Fatalf("docs/*.md: %v", err)
	}
	out := []string{"README.md"}
	for _, p := range md {
		out = append(out, filepath.Base(p))
	}
	return out
}

// TestDebContents checks every file of the .deb: where it is, its mode,
// which are conffiles, and the maintainer scripts.
func TestDebContents(t *testing.T) {
	b := build(t)
	want := map[string]string{
		"/usr/sbin/connlogd":                          "-rwxr-xr-x",
		"/lib/systemd/system/connlogd.service":        "-rw-r--r--",
		"/etc/connlogd/config.yaml":                   "-rw-r--r--",
		"/etc/logrotate.d/connlogd":                   "-rw-r--r--",
		"/usr/share/man/man8/connlogd.8.gz":           "-rw-r--r--",
		"/usr/share/man/man5/connlogd.yaml.5.gz":      "-rw-r--r--",
		"/usr/share/doc/connlogd/copyright":           "-rw-r--r--",
		"/usr/share/doc/connlogd/changelog.Debian.gz": "-rw-r--r--",
		"/usr/share/lintian/overrides/connlogd":       "-rw-r--r--",
	}
	for _, d := range docs(t) {
		want["/usr/share/doc/connlogd/"+d] = "-rw-r--r--"
	}
	out, err := exec.Command("dpkg-deb", "-c", b.deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasPrefix(f[0], "-") {
			continue // directories
		}
		if f[1] != "root/root" && f[1] != "0/0" {
			t.Errorf("%s owned by %s, want root/root", f[5], f[1])
		}
		got[strings.TrimPrefix(f[5], ".")] = f[0]
	}
	compare(t, "deb", got, want)

	ctrl := filepath.Join(t.TempDir(), "control")
	if out, err := exec.Command("dpkg-deb", "-e", b.deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sortedLines(string(conffiles)), []string{"/etc/connlogd/config.yaml", "/etc/logrotate.d/connlogd"}; !slices.Equal(got, want) {
		t.Errorf("conffiles %q, want %q", got, want)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		packaged, err := os.ReadFile(filepath.Join(ctrl, s))
		if err != nil {
			t.Fatal(err)
		}
		if src, _ := os.ReadFile(filepath.Join("scripts", s)); !bytes.Equal(packaged, src) {
			t.Errorf("the .deb's %s is not packaging/scripts/%s", s, s)
		}
	}
	if ctl, err := os.ReadFile(filepath.Join(ctrl, "control")); err != nil || !bytes.Contains(ctl, []byte("Version: "+b.version+"-1\n")) {
		t.Errorf("control file (%v) has no Version: %s-1:\n%s", err, b.version, ctl)
	}
}

// TestRpmContents checks every file of the .rpm with its mode and flags:
// c(onfig), n(oreplace), d(oc), l(icense).
func TestRpmContents(t *testing.T) {
	require(t, false, "rpm")
	b := build(t)
	type file struct{ mode, flags string }
	want := map[string]file{
		"/usr/sbin/connlogd":                       {"-rwxr-xr-x", ""},
		"/usr/lib/systemd/system/connlogd.service": {"-rw-r--r--", ""},
		"/etc/connlogd/config.yaml":                {"-rw-r--r--", "cn"},
		"/etc/logrotate.d/connlogd":                {"-rw-r--r--", "cn"},
		"/usr/share/man/man8/connlogd.8.gz":        {"-rw-r--r--", "d"},
		"/usr/share/man/man5/connlogd.yaml.5.gz":   {"-rw-r--r--", "d"},
		"/usr/share/licenses/connlogd/copyright":   {"-rw-r--r--", "l"},
		"/etc/connlogd":                            {"drwxr-xr-x", ""},
	}
	for _, d := range docs(t) {
		want["/usr/share/doc/connlogd/"+d] = file{"-rw-r--r--", "d"}
	}
	out, err := exec.Command("rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEMODES:perms} %{FILEFLAGS:fflags}\n]`, b.rpm).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]file{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			t.Fatalf("rpm -qp line %q", l)
		}
		fl := ""
		if len(f) > 2 {
			fl = f[2]
		}
		got[f[0]] = file{f[1], fl}
	}
	gotS, wantS := map[string]string{}, map[string]string{}
	for k, v := range got {
		gotS[k] = v.mode + " " + v.flags
	}
	for k, v := range want {
		wantS[k] = v.mode + " " + v.flags
	}
	compare(t, "rpm", gotS, wantS)

	scripts, err := exec.Command("rpm", "-qp", "--scripts", b.rpm).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"rpm-post", "rpm-preun", "rpm-postun"} {
		src, err := os.ReadFile(filepath.Join("scripts", s))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(scripts, bytes.TrimSpace(src)) {
			t.Errorf("the .rpm's scriptlets do not hold packaging/scripts/%s:\n%s", s, scripts)
		}
	}
	info, err := exec.Command("rpm", "-qp", "--qf", `%{NAME} %{VERSION} %{RELEASE} %{ARCH}`, b.rpm).Output()
	if err != nil || string(info) != "connlogd "+b.version+" 1 x86_64" {
		t.Errorf("rpm header %q (%v), want connlogd %s 1 x86_64", info, err, b.version)
	}
}

func compare(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for _, k := range sortedKeys(want) {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s missing", what, k)
		} else if g != want[k] {
			t.Errorf("%s: %s is %q, want %q", what, k, g, want[k])
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %s (%s)", what, k, got[k])
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedLines(s string) []string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(ls)
	return ls
}

// TestPackagedBinary runs the .deb's binary as installed: static, with a
// real version, and accepting the packaged configuration, which is
// config.example.yaml (the documented defaults) byte for byte.
func TestPackagedBinary(t *testing.T) {
	b := build(t)
	bin := filepath.Join(b.extracted, "usr/sbin/connlogd")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("packaged binary is dynamically linked (%v)", p.Type)
		}
	}
	f.Close()

	out, err := exec.Command(bin, "-version").Output()
	if err != nil {
		t.Fatalf("-version: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	commitRE := regexp.MustCompile(`^commit [0-9a-f]{40}(-dirty)?$`)
	if len(lines) != 3 || lines[0] != "connlogd "+b.version || !commitRE.MatchString(lines[1]) || lines[2] != runtime.Version() {
		t.Errorf("-version printed:\n%s\nwant connlogd %s, its commit, %s", out, b.version, runtime.Version())
	}

	cfg := filepath.Join(b.extracted, "etc/connlogd/config.yaml")
	out, err = exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration is valid") {
		t.Errorf("-check-config on the packaged configuration: %v\n%s", err, out)
	}
	packaged, _ := os.ReadFile(cfg)
	example, err := os.ReadFile("../config.example.yaml")
	if err != nil || !bytes.Equal(packaged, example) {
		t.Errorf("the packaged /etc/connlogd/config.yaml is not config.example.yaml (%v)", err)
	}
}

// TestCopyright: the copyright file names every module linked into the
// packaged binary, at the version linked, with a license.
func TestCopyright(t *testing.T) {
	b := build(t)
	text, err := os.ReadFile(filepath.Join(b.extracted, "usr/share/doc/connlogd/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	bi, err := buildinfo.ReadFile(filepath.Join(b.extracted, "usr/sbin/connlogd"))
	if err != nil {
		t.Fatal(err)
	}
	if len(bi.Deps) == 0 {
		t.Fatal("the packaged binary records no modules")
	}
	stanzas := strings.Split(string(text), "\n\n")
	for _, d := range append(bi.Deps, &debug.Module{Path: "Go standard library", Version: bi.GoVersion}) {
		name := "Go module " + d.Path + " " + d.Version
		if d.Path == "Go standard library" {
			name = d.Path + " " + d.Version
		}
		found := false
		for _, st := range stanzas {
			if strings.HasPrefix(st, "Files: "+name+" ") {
				found = strings.Contains(st, "\nLicense: ")
				break
			}
		}
		if !found {
			t.Errorf("copyright has no stanza with a license for %s", name)
		}
	}
}

// TestDebInstallPurge installs the .deb with dpkg into a root of its own
// (the maintainer scripts run with DPKG_ROOT set), gives it what a running
// service leaves (state, logs, the enablement link, an edited
// configuration), then removes it, which keeps the configuration and
// state, and purges it, which leaves nothing.
func TestDebInstallPurge(t *testing.T) {
	require(t, true, "dpkg")
	b := build(t)
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dpkg := func(args ...string) {
		t.Helper()
		cmd := exec.Command("dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-confold", "--log=" + filepath.Join(root, "dpkg.log")}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dpkg %v: %v\n%s", args, err, out)
		}
	}
	exists := func(p string) bool {
		_, err := os.Lstat(filepath.Join(root, p))
		return err == nil
	}
	write := func(p, text string) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}

	dpkg("-i", b.deb)
	for _, p := range []string{"usr/sbin/connlogd", "lib/systemd/system/connlogd.service", "etc/connlogd/config.yaml"} {
		if !exists(p) {
			t.Errorf("installed: %s missing", p)
		}
	}
	// What systemd and the admin leave behind.
	write("etc/connlogd/config.yaml", "interval: 5s\n")
	write("var/lib/private/connlogd/state.json", "{}")
	symlink("private/connlogd", "var/lib/connlogd")
	write("var/log/private/connlogd/events.json", "")
	symlink("private/connlogd", "var/log/connlogd")
	symlink("/lib/systemd/system/connlogd.service", "etc/systemd/system/multi-user.target.wants/connlogd.service")

	// Reinstalling (an upgrade's path) keeps the edited configuration.
	dpkg("-i", b.deb)
	if text, _ := os.ReadFile(filepath.Join(root, "etc/connlogd/config.yaml")); string(text) != "interval: 5s\n" {
		t.Errorf("reinstalling replaced the edited configuration with:\n%s", text)
	}

	dpkg("-r", "connlogd")
	if exists("usr/sbin/connlogd") || exists("lib/systemd/system/connlogd.service") {
		t.Error("remove left the binary or the unit")
	}
	for _, p := range []string{"etc/connlogd/config.yaml", "var/lib/private/connlogd/state.json"} {
		if !exists(p) {
			t.Errorf("remove took %s, which only purge may", p)
		}
	}

	dpkg("-P", "connlogd")
	for _, p := range []string{"etc/connlogd", "etc/logrotate.d/connlogd", "var/lib/private/connlogd", "var/lib/connlogd",
		"var/log/private/connlogd", "var/log/connlogd", "etc/systemd/system/multi-user.target.wants/connlogd.service"} {
		if exists(p) {
			t.Errorf("purge left %s", p)
		}
	}
}

// TestMaintainerScripts: the scripts parse, and never enable or start the
// service (only an upgrade restarts one that runs).
func TestMaintainerScripts(t *testing.T) {
	for _, s := range []string{"postinst", "prerm", "postrm", "rpm-post", "rpm-preun", "rpm-postun"} {
		path := filepath.Join("scripts", s)
		if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(text), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			if regexp.MustCompile(`(^|\s)(enable|start|restart|reload-or-restart)(\s|$)`).MatchString(l) {
				t.Errorf("%s enables or starts the service: %s", s, strings.TrimSpace(l))
			}
		}
	}
}

// TestPackagedUnit: the unit the .deb installs starts /usr/sbin/connlogd,
// verifies, and keeps its exposure at 2.0 or less.
func TestPackagedUnit(t *testing.T) {
	b := build(t)
	unit, err := os.ReadFile(filepath.Join(b.extracted, "lib/systemd/system/connlogd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/sbin/connlogd\n", "ExecStartPre=/usr/sbin/connlogd -check-config\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("packaged unit has no %q", want)
		}
	}
	if bytes.Contains(unit, []byte("/usr/local")) {
		t.Error("packaged unit names /usr/local")
	}
	// verify checks that the commands exist: point it at the extracted one.
	path := filepath.Join(t.TempDir(), "connlogd.service")
	bin := filepath.Join(b.extracted, "usr/sbin/connlogd")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/sbin/connlogd"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	systemdtest.Verify(t, path)
	level, report := systemdtest.Exposure(t, path)
	t.Logf("packaged unit's exposure %.1f", level)
	if level > 2.0 {
		t.Errorf("packaged unit's exposure %.1f, want <= 2.0:\n%s", level, report)
	}
}

// TestManPages renders both pages with man, which must not warn, and
// checks they carry their sources: every flag, file and signal of -h,
// every key of config.example.yaml, and the words of the README sections
// packaging/mangen takes.
func TestManPages(t *testing.T) {
	require(t, false, "man")
	b := build(t)
	render := func(page string) string {
		t.Helper()
		path := filepath.Join(b.extracted, page)
		man := func(width string) string {
			cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", path)
			cmd.Env = append(os.Environ(), "MANWIDTH="+width, "LC_ALL=C.UTF-8")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || stderr.Len() > 0 {
				t.Errorf("man %s at width %s: %v\n%s", page, width, err, stderr.String())
			}
			return string(out)
		}
		// A terminal's width, for the warnings (a table too wide); then
		// lines long enough that no word is hyphenated, for the text.
		man("80")
		return strings.Join(strings.Fields(man("10000")), " ")
	}
	page8 := render("usr/share/man/man8/connlogd.8.gz")
	page5 := render("usr/share/man/man5/connlogd.yaml.5.gz")

	usage, _ := exec.Command(filepath.Join(b.extracted, "usr/sbin/connlogd"), "-h").CombinedOutput()
	for _, l := range strings.Split(string(usage), "\n") {
		if strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "   ") {
			term := strings.TrimSpace(l)
			if !strings.Contains(page8, term) {
				t.Errorf("connlogd(8) lacks %q of connlogd -h", term)
			}
		}
	}
	for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "SIGNALS", "PRIVILEGES", "SEE ALSO"} {
		if !strings.Contains(page8, " "+s+" ") {
			t.Errorf("connlogd(8) has no %s section", s)
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{"Output", "Privileges"} {
		missingWords(t, "connlogd(8)", page8, section(t, string(readme), sec))
	}
	missingWords(t, "connlogd.yaml(5)", page5, section(t, string(readme), "Configuration"))

	example, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keys := regexp.MustCompile(`(?m)^#?\s*-?\s*([a-z_]+):`).FindAllStringSubmatch(string(example), -1)
	if len(keys) < 10 {
		t.Fatalf("found only %d keys in config.example.yaml", len(keys))
	}
	for _, k := range keys {
		if !strings.Contains(page5, k[1]+":") {
			t.Errorf("connlogd.yaml(5) lacks the key %q", k[1])
		}
	}
}

// section is the text of a README section.
func section(t *testing.T, readme, name string) string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "\n## "+name+"\n")
	if !ok {
		t.Fatalf("README.md has no section %q", name)
	}
	body, _, _ := strings.Cut(rest, "\n## ")
	return body
}

// missingWords reports the words of a markdown text that a rendered page
// lacks. Links to files are rewritten by mangen, so their targets are left
// out; every other word must be there.
func missingWords(t *testing.T, page, rendered, md string) {
	t.Helper()
	// Links to repository files become their installed paths; tables
	// become lists, their header rows left out.
	md = regexp.MustCompile(`\[[^\]]*\]\([^:)]*\)`).ReplaceAllString(md, "")
	md = regexp.MustCompile(`(?m)^\|.*\|\n\|[-|: ]+\|$`).ReplaceAllString(md, "")
	words := map[string]bool{}
	for _, w := range regexp.MustCompile(`[A-Za-z][A-Za-z0-9_]{3,}`).FindAllString(rendered, -1) {
		words[w] = true
	}
	var missing []string
	sc := bufio.NewScanner(strings.NewReader(md))
	for sc.Scan() {
		for _, w := range regexp.MustCompile(`[A-Za-z][A-Za-z0-9_]{3,}`).FindAllString(sc.Text(), -1) {
			if !words[w] && !slices.Contains(missing, w) {
				missing = append(missing, w)
			}
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s lacks words of its README section: %q", page, missing)
	}
}

// TestImage builds the image from packaging/Dockerfile with a docker
// daemon of its own (its own data root, no network set-up, nothing
// pulled: the image is FROM scratch) and runs -version in it.
func TestImage(t *testing.T) {
	require(t, true, "dockerd", "docker")
	b := build(t)
	d := dockertest.Start(t)
	image := "connlogd/connlogd:" + b.imageTag
	d.Docker(t, "build", "-f", "Dockerfile", "--build-arg", "VERSION="+b.version, "-t", image, b.dist)
	out := d.Docker(t, "run", "--rm", "--network", "none", image, "-version")
	if first, _, _ := strings.Cut(out, "\n"); first != "connlogd "+b.version {
		t.Errorf("the image's -version says %q, want connlogd %s", out, b.version)
	}
	out = d.Docker(t, "image", "inspect", "--format", "{{.Config.Entrypoint}} {{index .Config.Labels \"org.opencontainers.image.version\"}}", image)
	if strings.TrimSpace(out) != "[/usr/sbin/connlogd] "+b.version {
		t.Errorf("image entrypoint and version label: %q", out)
	}
}

// TestDaemonSet parses packaging/kubernetes/daemonset.yaml and checks the
// least-privilege settings: the image that packaging/Dockerfile builds,
// the node's PID and network namespaces, the unit's capabilities and no
// others, a read-only root, limits, and the configuration from a
// ConfigMap that connlogd accepts.
func TestDaemonSet(t *testing.T) {
	data, err := os.ReadFile("kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds daemonSet
	var cm configMap
	dec := yaml.NewDecoder(bytes.NewReader(data))
	kinds := map[string]int{}
	for {
		var node yaml.Node
		if err := dec.Decode(&node); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("daemonset.yaml: %v", err)
		}
		var head struct{ Kind string }
		if err := node.Decode(&head); err != nil {
			t.Fatal(err)
		}
		kinds[head.Kind]++
		switch head.Kind {
		case "DaemonSet":
			err = node.Decode(&ds)
		case "ConfigMap":
			err = node.Decode(&cm)
		}
		if err != nil {
			t.Fatalf("%s: %v", head.Kind, err)
		}
	}
	if kinds["DaemonSet"] != 1 || kinds["ConfigMap"] != 1 {
		t.Fatalf("want one DaemonSet and one ConfigMap, got %v", kinds)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || !spec.HostNetwork {
		t.Errorf("hostPID %v, hostNetwork %v: attribution and the node's sockets need both", spec.HostPID, spec.HostNetwork)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted; connlogd talks to no API server")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if repo, _, _ := strings.Cut(c.Image, ":"); repo != "connlogd/connlogd" {
		t.Errorf("image %q, want connlogd/connlogd (packaging/Dockerfile's)", c.Image)
	}
	sc := c.SecurityContext
	if sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem {
		t.Errorf("securityContext %+v: want unprivileged, no escalation, read-only root", sc)
	}
	if sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("seccomp profile %q, want RuntimeDefault", sc.SeccompProfile.Type)
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities dropped: %v, want ALL", sc.Capabilities.Drop)
	}
	// The unit's capabilities are the README's table's; the pod gets the
	// same and no more.
	unit, err := os.ReadFile("../systemd/connlogd.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^AmbientCapabilities=(.*)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("the unit has no AmbientCapabilities=")
	}
	var want []string
	for _, c := range strings.Fields(string(m[1])) {
		want = append(want, strings.TrimPrefix(c, "CAP_"))
	}
	got := slices.Clone(sc.Capabilities.Add)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("capabilities added %v, want the unit's %v", got, want)
	}
	if c.Resources.Limits["memory"] == "" || c.Resources.Limits["cpu"] == "" || c.Resources.Requests["memory"] == "" {
		t.Errorf("resources %+v: want memory and cpu limits, a memory request", c.Resources)
	}

	// The configuration: the ConfigMap mounted where -config points.
	var mount string
	for _, v := range c.VolumeMounts {
		for _, vol := range spec.Volumes {
			if vol.Name == v.Name && vol.ConfigMap.Name == cm.Metadata.Name {
				mount = v.MountPath
				if !v.ReadOnly {
					t.Error("the configuration is mounted read-write")
				}
			}
		}
	}
	if mount == "" {
		t.Fatal("no ConfigMap volume mounted")
	}
	if !slices.Equal(c.Args, []string{"-config", mount + "/config.yaml"}) {
		t.Errorf("args %q, want -config %s/config.yaml", c.Args, mount)
	}
	text, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatal("the ConfigMap has no config.yaml")
	}
	b := build(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(b.extracted, "usr/sbin/connlogd"), "-check-config", "-config", path).CombinedOutput()
	if err != nil {
		t.Errorf("the ConfigMap's config.yaml: %v\n%s", err, out)
	}
}

type daemonSet struct {
	Spec struct {
		Template struct {
			Spec struct {
				HostPID                      bool  `yaml:"hostPID"`
				HostNetwork                  bool  `yaml:"hostNetwork"`
				AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
				Containers                   []struct {
					Image           string
					Args            []string
					SecurityContext struct {
						Privileged               bool
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
						Capabilities             struct{ Add, Drop []string }
						SeccompProfile           struct{ Type string } `yaml:"seccompProfile"`
					} `yaml:"securityContext"`
					Resources struct {
						Limits, Requests map[string]string
					}
					VolumeMounts []struct {
						Name      string
						MountPath string `yaml:"mountPath"`
						ReadOnly  bool   `yaml:"readOnly"`
					} `yaml:"volumeMounts"`
				}
				Volumes []struct {
					Name      string
					ConfigMap struct{ Name string } `yaml:"configMap"`
				}
			}
		}
	}
}

type configMap struct {
	Metadata struct{ Name string }
	Data     map[string]string
}
