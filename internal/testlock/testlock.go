// Package testlock serialises tests that share state no test can own
// alone: the kernel's audit rules, docker's /run directories. go test
// runs the packages of ./... in parallel processes, so a mutex is not
// enough; an exclusive flock on a file named for the resource is, and the
// kernel releases it if the test process dies.
package testlock

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	mu      sync.Mutex
	holders = map[string]testing.TB{}
)

// Exclusive holds the lock called name until t's cleanup. A test that
// already holds it gets it again at once; any other test, in this process
// or another, waits for it.
func Exclusive(t testing.TB, name string) {
	t.Helper()
	mu.Lock()
	if holders[name] == t {
		mu.Unlock()
		return
	}
	mu.Unlock()
	path := filepath.Join(os.TempDir(), "connlogd-testlock-"+name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		t.Fatalf("test lock %s: %v", name, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("test lock %s: %v", name, err)
	}
	mu.Lock()
	holders[name] = t
	mu.Unlock()
	t.Cleanup(func() {
		mu.Lock()
		delete(holders, name)
		mu.Unlock()
		f.Close() // releases the flock
	})
}
