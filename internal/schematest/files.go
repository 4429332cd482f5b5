package schematest

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Dir returns the directory of the official schema files: shared/schemas
// beside the repository's root (the directory holding go.mod); in a git
// worktree kept elsewhere, beside the main checkout (found through git's
// common directory); or $CONNLOGD_SCHEMAS when set. A missing directory
// fails the test: the conformance tests must not pass by not running.
func Dir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("CONNLOGD_SCHEMAS"); d != "" {
		return d
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "..", "shared", "schemas")
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	// A worktree: its common git directory is the main checkout's .git.
	out, err := exec.Command("git", "-C", root, "rev-parse", "--path-format=absolute", "--git-common-dir").Output()
	if err == nil {
		mainRoot := filepath.Dir(strings.TrimSpace(string(out)))
		if alt := filepath.Join(mainRoot, "..", "shared", "schemas"); mainRoot != root {
			if _, err := os.Stat(alt); err == nil {
				return alt
			}
		}
	}
	t.Fatalf("schematest: no official schema files in %s (set CONNLOGD_SCHEMAS to their directory)", dir)
	return ""
}

// repoRoot is the nearest directory above the working directory that
// holds go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("schematest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// readJSON decodes a file, gunzipping it when its name ends in .gz.
func readJSON(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	defer f.Close()
	var r interface{ Read([]byte) (int, error) } = f
	if filepath.Ext(path) == ".gz" {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("read schema %s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	if err := json.NewDecoder(r).Decode(v); err != nil {
		return fmt.Errorf("read schema %s: %w", path, err)
	}
	return nil
}

var (
	ecsOnce, ocsfOnce sync.Once
	ecsSchema         *ECS
	ocsfSchema        *OCSF
	ecsErr, ocsfErr   error
)

// LoadedECS returns ECS 8.11.0 from Dir, read once per test binary.
func LoadedECS(t testing.TB) *ECS {
	t.Helper()
	dir := Dir(t)
	ecsOnce.Do(func() { ecsSchema, ecsErr = LoadECS(filepath.Join(dir, "ecs_flat-8.11.0.json.gz")) })
	if ecsErr != nil {
		t.Fatal(ecsErr)
	}
	return ecsSchema
}

// LoadedOCSF returns OCSF 1.3.0 from Dir, read once per test binary.
func LoadedOCSF(t testing.TB) *OCSF {
	t.Helper()
	dir := Dir(t)
	ocsfOnce.Do(func() { ocsfSchema, ocsfErr = LoadOCSF(filepath.Join(dir, "ocsf-1.3.0-compiled.json.gz")) })
	if ocsfErr != nil {
		t.Fatal(ocsfErr)
	}
	return ocsfSchema
}
