//go:build linux

package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDiskFull runs a spool on a 1 MiB tmpfs: an append the disk cannot
// take fails with ENOSPC and leaves the files whole; once acknowledged
// records are deleted, appends work again, and a reopen finds every
// record that was appended.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CONNLOGD_REQUIRE_NETNS") == "1" {
			t.Fatal("needs root to mount a tmpfs")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "spool")
	s, err := Open(dir, 64<<20) // the limit is beyond the disk
	if err != nil {
		t.Fatal(err)
	}
	rec := bytes.Repeat([]byte{'d'}, 10000)
	n := 0
	for ; n < 1000; n++ {
		if _, err = s.Append(rec, time.Now()); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("after %d records: %v, want ENOSPC", n, err)
	}
	if s.Len() != uint64(n) {
		t.Fatalf("spool holds %d records after %d appends", s.Len(), n)
	}
	// Acknowledge them all: the segment is emptied, room comes back.
	var end Cursor
	got := 0
	for got < n {
		c, k, _, err := s.Read(1, 1<<20, func([]byte) {})
		if err != nil || k == 0 {
			t.Fatalf("read: %d, %v", k, err)
		}
		end, got = c, got+k
	}
	if _, err := s.Ack(end); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := s.Append(rec, time.Now()); err != nil {
			t.Fatalf("append %d after room came back: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.Events != 5 || st.TornBytes != 0 {
		t.Fatalf("after reopening: %+v, want 5 records and nothing torn", st)
	}
}
