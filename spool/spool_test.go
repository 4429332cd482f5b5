package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func rec(i int) []byte {
	return []byte(fmt.Sprintf("record %06d %s", i, bytes.Repeat([]byte{'x'}, i%97)))
}

func mustOpen(t testing.TB, dir string, max int64) *Spool {
	t.Helper()
	s, err := Open(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func appendN(t testing.TB, s *Spool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if d, err := s.Append(rec(i), time.Now()); err != nil || d != 0 {
			t.Fatalf("append %d: dropped %d, %v", i, d, err)
		}
	}
}

// readAll reads everything pending, returning the records and the cursor
// after the last.
func readAll(t testing.TB, s *Spool, per int) ([]string, Cursor) {
	t.Helper()
	var out []string
	var end Cursor
	for {
		c, n, corrupt, err := s.Read(per, 1<<20, func(r []byte) { out = append(out, string(r)) })
		if err != nil || corrupt != 0 {
			t.Fatalf("read: %d corrupt, %v", corrupt, err)
		}
		if n == 0 {
			return out, end
		}
		end = c
	}
}

func wantRecs(t *testing.T, got []string, from, to int) {
	t.Helper()
	if len(got) != to-from {
		t.Fatalf("got %d records, want %d (%d..%d)", len(got), to-from, from, to)
	}
	for i, g := range got {
		if g != string(rec(from+i)) {
			t.Fatalf("record %d: got %q, want %q", i, g, rec(from+i))
		}
	}
}

func TestAppendReadAckReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := mustOpen(t, dir, MinBytes)
	appendN(t, s, 0, 1000)
	got, _ := readAll(t, s, 100)
	wantRecs(t, got, 0, 1000)

	// The receiver failed: everything comes again, in order.
	s.Rewind()
	var first []string
	c, n, _, err := s.Read(300, 1<<20, func(r []byte) { first = append(first, string(r)) })
	if err != nil || n != 300 {
		t.Fatalf("read: %d, %v", n, err)
	}
	wantRecs(t, first, 0, 300)
	if _, err := s.Ack(c); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Events != 700 || st.Oldest.IsZero() {
		t.Fatalf("stats after ack: %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened: what was not acknowledged is handed out again.
	s = mustOpen(t, dir, MinBytes)
	defer s.Close()
	if st := s.Stats(); st.Events != 700 || st.TornBytes != 0 {
		t.Fatalf("stats after reopen: %+v", st)
	}
	got, _ = readAll(t, s, 64)
	wantRecs(t, got, 300, 1000)

	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("spool dir mode: %v, %v", fi.Mode(), err)
	}
}

func TestAckDeletesSegments(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, MinBytes)
	defer s.Close()
	big := bytes.Repeat([]byte{'y'}, 100<<10)
	for range 40 {
		if _, err := s.Append(big, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.segs) < 2 {
		t.Fatalf("want several segments, have %d", len(s.segs))
	}
	for {
		c, n, _, err := s.Read(10, 1<<20, func([]byte) {})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if _, err := s.Ack(c); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	segs := 0
	for _, e := range ents {
		if _, ok := parseSegName(e.Name()); ok {
			segs++
		}
	}
	if st := s.Stats(); segs != 1 || st.Events != 0 || st.Bytes > int64(len(magic))+40*(100<<10+HeaderSize) {
		t.Fatalf("after acking all: %d segment files, %+v", segs, st)
	}
}

func TestFullDropsOldest(t *testing.T) {
	s := mustOpen(t, t.TempDir(), MinBytes)
	defer s.Close()
	payload := bytes.Repeat([]byte{'z'}, 1000)
	total, dropped := 0, 0
	for s.Stats().Dropped == 0 || total < 20000 {
		p := append([]byte(strconv.Itoa(total)+" "), payload...)
		d, err := s.Append(p, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		dropped += d
		total++
		if st := s.Stats(); st.Bytes > MinBytes {
			t.Fatalf("spool holds %d bytes, over its limit %d", st.Bytes, MinBytes)
		}
	}
	st := s.Stats()
	if uint64(dropped) != st.Dropped || st.Events+st.Dropped != uint64(total) {
		t.Fatalf("appended %d, Append said %d dropped, stats %+v", total, dropped, st)
	}
	// What is left is the newest, in order, right after the dropped.
	got, _ := readAll(t, s, 1000)
	for i, g := range got {
		want := strconv.Itoa(dropped+i) + " "
		if !bytes.HasPrefix([]byte(g), []byte(want)) {
			t.Fatalf("record %d starts %q, want %q", i, g[:10], want)
		}
	}
	if len(got) != total-dropped {
		t.Fatalf("read %d, want %d", len(got), total-dropped)
	}
}

func TestDropWhileReading(t *testing.T) {
	s := mustOpen(t, t.TempDir(), MinBytes)
	defer s.Close()
	payload := bytes.Repeat([]byte{'w'}, 4000)
	// Read (in flight) part of the oldest segment, then fill the spool.
	for range 10 {
		s.Append(payload, time.Now())
	}
	c, n, _, _ := s.Read(5, 1<<20, func([]byte) {})
	if n != 5 {
		t.Fatalf("read %d", n)
	}
	for s.Stats().Dropped == 0 {
		if _, err := s.Append(payload, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// The late acknowledgement of dropped records changes nothing.
	if _, err := s.Ack(c); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	got, _ := readAll(t, s, 100)
	if uint64(len(got)) != st.Events {
		t.Fatalf("read %d after the drop, stats say %d pending", len(got), st.Events)
	}
}

// TestTornTail cuts the last record at every length and checks that
// Open keeps every whole record before it and never hands out the torn
// one.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, MinBytes)
	appendN(t, s, 0, 10)
	last := s.segs[len(s.segs)-1]
	s.Close()
	name := filepath.Join(dir, segName(last.id))
	whole, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lastLen := int64(HeaderSize + len(rec(9)))
	for cut := int64(1); cut < lastLen; cut++ {
		if err := os.WriteFile(name, whole[:int64(len(whole))-cut], 0o600); err != nil {
			t.Fatal(err)
		}
		s := mustOpen(t, dir, MinBytes)
		st := s.Stats()
		got, _ := readAll(t, s, 100)
		s.Close()
		if st.TornBytes != lastLen-cut {
			t.Fatalf("cut %d: torn bytes %d, want %d", cut, st.TornBytes, lastLen-cut)
		}
		wantRecs(t, got, 0, 9)
		fi, _ := os.Stat(name)
		if fi.Size() != int64(len(whole))-lastLen {
			t.Fatalf("cut %d: file is %d bytes, want %d", cut, fi.Size(), int64(len(whole))-lastLen)
		}
	}
	// A flipped bit in the last record is caught by its CRC.
	bad := bytes.Clone(whole)
	bad[len(bad)-3] ^= 1
	os.WriteFile(name, bad, 0o600)
	s = mustOpen(t, dir, MinBytes)
	defer s.Close()
	got, _ := readAll(t, s, 100)
	wantRecs(t, got, 0, 9)
	if st := s.Stats(); st.TornBytes != lastLen {
		t.Fatalf("flipped bit: torn %d, want %d", st.TornBytes, lastLen)
	}
	// Appending after the cut continues cleanly.
	appendN(t, s, 9, 12)
	got, _ = readAll(t, s, 100)
	wantRecs(t, got, 9, 12)
}

func TestNoSymlink(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o700)
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(link, MinBytes); err == nil {
		s.Close()
		t.Fatal("opened a spool through a symbolic link")
	}
	// A segment name that is a link is refused too.
	s := mustOpen(t, real, MinBytes)
	s.Close()
	target := filepath.Join(base, "elsewhere")
	os.WriteFile(target, []byte(magic), 0o600)
	os.Symlink(target, filepath.Join(real, segName(99)))
	if s, err := Open(real, MinBytes); err == nil {
		s.Close()
		t.Fatal("opened a segment through a symbolic link")
	}
}

func TestExclusive(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, MinBytes)
	defer s.Close()
	if s2, err := Open(dir, MinBytes); err == nil {
		s2.Close()
		t.Fatal("a second Open of a spool in use succeeded")
	}
}

func TestLimits(t *testing.T) {
	if _, err := Open(t.TempDir(), MinBytes-1); err == nil {
		t.Fatal("opened with max_bytes below the minimum")
	}
	s := mustOpen(t, t.TempDir(), MinBytes)
	defer s.Close()
	if _, err := s.Append(make([]byte, MaxRecord+1), time.Now()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized record: %v", err)
	}
}

// TestKill9 appends from a child process killed with SIGKILL mid-stream:
// every record the child reported appended is there after a reopen, in
// order, and nothing torn is handed out.
func TestKill9(t *testing.T) {
	if dir := os.Getenv("SPOOL_CHILD_DIR"); dir != "" {
		s, err := Open(dir, 64<<20)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		for i := 0; ; i++ {
			if _, err := s.Append(rec(i), time.Now()); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			fmt.Println(i)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$")
	cmd.Env = append(os.Environ(), "SPOOL_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	last := -1
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("child: %s", sc.Text())
		}
		last = n
		if n == 20000 {
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	cmd.Wait()
	s := mustOpen(t, dir, 64<<20)
	defer s.Close()
	got, _ := readAll(t, s, 1000)
	if len(got) <= last {
		t.Fatalf("child appended %d records, %d survived", last+1, len(got))
	}
	wantRecs(t, got, 0, len(got))
}

// FuzzOpen feeds arbitrary bytes as a segment after whole records: Open
// never fails on them nor panics, keeps the whole records before them,
// and hands out nothing that was not appended.
func FuzzOpen(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0})
	f.Add(bytes.Repeat([]byte{0xff}, 40))
	var good bytes.Buffer
	for i := range 3 {
		r := rec(i)
		var h [HeaderSize]byte
		h[0], h[1] = byte(len(r)), byte(len(r)>>8)
		h[8] = byte(i)
		c := checksum(h[:], r)
		h[4], h[5], h[6], h[7] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
		good.Write(h[:])
		good.Write(r)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:good.Len()-5])
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		s := mustOpen(t, dir, MinBytes)
		appendN(t, s, 0, 5)
		s.Close()
		name := filepath.Join(dir, segName(1))
		fh, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.Write(tail)
		fh.Close()
		s, err = Open(dir, MinBytes)
		if err != nil {
			t.Fatalf("open after %d arbitrary bytes: %v", len(tail), err)
		}
		defer s.Close()
		got, _ := readAll(t, s, 1000)
		if len(got) < 5 {
			t.Fatalf("lost whole records: %d left", len(got))
		}
		wantRecs(t, got[:5], 0, 5)
		// Anything after them checked whole: it must lie in the tail as
		// written, back to back.
		rest := tail
		for _, g := range got[5:] {
			if len(rest) < HeaderSize+len(g) || !bytes.Equal(rest[HeaderSize:HeaderSize+len(g)], []byte(g)) {
				t.Fatalf("handed out %q, which is not a record of the tail", g)
			}
			rest = rest[HeaderSize+len(g):]
		}
		if st := s.Stats(); st.TornBytes != int64(len(rest)) {
			t.Fatalf("torn bytes %d, want %d", st.TornBytes, len(rest))
		}
	})
}
