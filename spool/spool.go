// Package spool is a bounded, append-only disk queue of opaque records: a
// network sink's events wait in it while the receiver is away, and leave
// it only when the receiver has acknowledged them. It survives a receiver
// outage of any length within its byte limit, and a crash of the process
// (kill -9): a spool opened again on the same directory hands out again
// everything that was not acknowledged.
//
// # Layout
//
// A spool is a directory (mode 0700, never reached through a symbolic
// link) of segment files, "<16 hex digits>.seg", oldest first, and a file
// "head" that says where the first unacknowledged record is. A segment
// starts with an 8-byte magic and holds records end to end:
//
//	length  uint32 LE  payload bytes
//	crc     uint32 LE  CRC-32C of length, time and payload
//	time    int64  LE  when the record was appended, Unix nanoseconds
//	payload length bytes
//
// Records are only ever appended to the last segment; a segment that has
// reached its size is closed and a new one started. A segment whose
// records are all acknowledged is deleted; the last one is cut back to
// its magic instead once every record is acknowledged. "head" holds two slots written
// alternately (sequence number, segment, offset, CRC), so a write torn by
// a power cut leaves the other slot valid.
//
// # Crash safety
//
// Open scans every record after the head and checks its length and CRC.
// A record that does not check (a write torn by a crash or a power cut)
// ends the segment: the file is cut there, the cut bytes are counted
// (Stats.TornBytes), and nothing of them is ever handed out.
//
// # What reaches the disk when
//
// Append writes the record with one write(2) before it returns, so the
// record is in the kernel's page cache: a crash of the process loses
// nothing. It does not fsync: an fsync per event costs a disk flush per
// event (see the package benchmarks and docs/delivery.md). The active
// segment is fsynced by Sync, which the owner calls on a timer (the sinks:
// once a second while records were appended), when a segment is closed,
// and by Close. A power cut can therefore lose the records appended in the
// last second; "head" is fsynced only at Close, so a power cut can also
// make records acknowledged in that time come again (duplicates, never
// losses).
//
// # Bounds
//
// The segment files together never exceed the byte limit. To append past
// it, the oldest segment is deleted whole; its records not yet
// acknowledged are dropped, and Append returns how many so that the
// caller counts them. A record being delivered when its segment is
// dropped is counted as dropped even if the receiver then takes it.
//
// The package never logs; errors are returned.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	magic = "CLSPOOL1"
	// HeaderSize is the bytes a record takes on disk besides its payload.
	HeaderSize = 16
	// MaxRecord is the largest payload a record may have.
	MaxRecord = 1 << 20
	// MinBytes is the smallest byte limit: room for a few segments of
	// the largest records.
	MinBytes = 4 * (MaxRecord + HeaderSize + int64(len(magic)))
	// maxSegment bounds a segment: a file deleted to make room drops at
	// most this much, and Open reads one whole segment at a time.
	maxSegment = 64 << 20
	headFile   = "head"
	slotSize   = 32
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors.
var (
	// ErrTooLarge: a record over MaxRecord.
	ErrTooLarge = errors.New("spool: record too large")
	// ErrClosed: the spool was closed.
	ErrClosed = errors.New("spool: closed")
)

// Cursor is the position of a record: the first one not yet read, or
// the first one not yet acknowledged.
type Cursor struct {
	seg uint64 // segment id
	off int64  // byte offset in the segment
	idx uint64 // record number since Open
}

// segment is one file's bookkeeping.
type segment struct {
	id    uint64
	size  int64  // bytes of whole records and magic
	first uint64 // record number of its first record still counted
	n     uint64 // records from first to the end
}

func (g *segment) end() uint64 { return g.first + g.n }

// Stats describe a spool's content.
type Stats struct {
	Bytes  int64     // the segment files' size
	Events uint64    // records not yet acknowledged
	Oldest time.Time // when the oldest of them was appended; zero if none
	// Dropped counts records dropped to make room since Open.
	Dropped uint64
	// TornBytes counts bytes cut at Open: records torn by a crash.
	TornBytes int64
	// Fsyncs counts the fsyncs of segments since Open.
	Fsyncs uint64
}

// Spool is one spool directory. Append may be called concurrently with
// Read, Ack and Rewind (one producer, one consumer).
type Spool struct {
	mu       sync.Mutex
	dir      *os.File
	dirfd    int
	path     string
	max      int64
	segMax   int64
	segs     []segment // oldest first; the last is the active one
	w        *os.File  // the active segment
	head     Cursor    // first record not acknowledged
	read     Cursor    // first record not handed out
	disk     int64
	dirty    bool
	dropped  uint64
	torn     int64
	fsyncs   uint64
	headF    *os.File
	headSeq  uint64
	closed   bool
	wbuf     []byte
	wake     chan struct{}
	rmu      sync.Mutex // the reader's own state below
	rf       *os.File
	rfID     uint64
	rbuf     []byte
	scratch  [HeaderSize]byte
	headSlot [slotSize]byte
}

// Open opens the spool in dir, creating it (mode 0700) if needed, and
// recovers its content: records torn by a crash are cut. maxBytes bounds
// the segment files together and must be at least MinBytes. Only one
// Spool may have a directory open at a time (an flock says so).
func Open(dir string, maxBytes int64) (*Spool, error) {
	if maxBytes < MinBytes {
		return nil, fmt.Errorf("spool %s: max_bytes %d below the minimum %d", dir, maxBytes, MinBytes)
	}
	s := &Spool{path: dir, max: maxBytes, dirfd: -1, wake: make(chan struct{}, 1)}
	s.segMax = min(max(maxBytes/8, 2*(MaxRecord+HeaderSize)), maxSegment)
	if err := s.openDir(); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	return s, nil
}

// Check says, without creating or changing anything, whether Open would
// refuse dir for what it is: a symbolic link or not a directory, owned by
// another uid, or missing under a parent this process cannot create it
// in. Configuration checks call it, so that they say what a start says.
func Check(dir string) error {
	var st unix.Stat_t
	err := unix.Lstat(dir, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		// Open creates it: the nearest existing ancestor must allow that.
		p := filepath.Dir(dir)
		for {
			if err := unix.Access(p, unix.W_OK|unix.X_OK); err == nil {
				return nil
			} else if !errors.Is(err, unix.ENOENT) || p == filepath.Dir(p) {
				return fmt.Errorf("spool %s: create parent: %w", dir, &fs.PathError{Op: "access", Path: p, Err: err})
			}
			p = filepath.Dir(p)
		}
	case err != nil:
		return fmt.Errorf("spool %s: %w", dir, &fs.PathError{Op: "lstat", Path: dir, Err: err})
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("spool %s: open: not a directory (a symbolic link is never followed)", dir)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("spool %s: owned by uid %d, not by this process's uid %d", dir, st.Uid, os.Geteuid())
	}
	return nil
}

// openDir creates the directory if missing and opens it without following
// a symbolic link at its last component, owned by us, mode 0700, locked.
func (s *Spool) openDir() error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return fmt.Errorf("create parent: %w", err)
	}
	if err := unix.Mkdir(s.path, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create: %w", err)
	}
	fd, err := unix.Open(s.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("open: not a directory (a symbolic link is never followed): %w", err)
		}
		return fmt.Errorf("open: %w", err)
	}
	s.dirfd = fd
	s.dir = os.NewFile(uintptr(fd), s.path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("owned by uid %d, not by this process's uid %d", st.Uid, os.Geteuid())
	}
	if st.Mode&0o777 != 0o700 {
		// Events say who talked to whom: only the daemon reads them.
		if err := unix.Fchmod(fd, 0o700); err != nil {
			return fmt.Errorf("chmod 0700: %w", err)
		}
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return errors.New("in use by another process")
		}
		return fmt.Errorf("lock: %w", err)
	}
	return nil
}

// openAt opens name in the spool directory, never through a link.
func (s *Spool) openAt(name string, flags int, perm uint32) (*os.File, error) {
	fd, err := unix.Openat(s.dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.path, name))
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	return f, nil
}

func segName(id uint64) string { return fmt.Sprintf("%016x.seg", id) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, ".seg")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	id, err := strconv.ParseUint(hex, 16, 64)
	return id, err == nil && id > 0
}

// recover reads the head, deletes acknowledged segments, scans the rest
// and cuts torn records.
func (s *Spool) recover() error {
	names, err := s.dir.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	var ids []uint64
	for _, n := range names {
		if id, ok := parseSegName(n); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	s.headF, err = s.openAt(headFile, unix.O_RDWR|unix.O_CREAT, 0o600)
	if err != nil {
		return err
	}
	hseg, hoff := s.loadHead()
	for len(ids) > 0 && ids[0] < hseg {
		if err := s.unlink(ids[0]); err != nil {
			return err
		}
		ids = ids[1:]
	}
	if len(ids) == 0 || ids[0] > hseg {
		hoff = int64(len(magic)) // the head's segment is gone: start at the next
	}
	var idx uint64
	for i, id := range ids {
		start := int64(len(magic))
		if i == 0 {
			start = max(hoff, start)
		}
		g, err := s.scan(id, start, idx)
		if err != nil {
			return err
		}
		if i == 0 {
			s.head = Cursor{seg: id, off: start, idx: idx}
		}
		idx = g.end()
		s.segs = append(s.segs, g)
		s.disk += g.size
	}
	if len(s.segs) == 0 {
		if err := s.newSegment(max(hseg, 1)); err != nil {
			return err
		}
		s.head = Cursor{seg: s.segs[0].id, off: int64(len(magic))}
	} else {
		last := s.segs[len(s.segs)-1]
		if s.w, err = s.openAt(segName(last.id), unix.O_WRONLY|unix.O_APPEND, 0); err != nil {
			return err
		}
	}
	s.head = s.normalize(s.head)
	s.read = s.head
	for s.disk > s.max && len(s.segs) > 1 {
		if err := s.dropOldest(); err != nil {
			return err
		}
	}
	return nil
}

// scan checks the records of segment id from offset start, cuts the file
// at the first one that does not check, and returns its bookkeeping with
// record numbers from idx.
func (s *Spool) scan(id uint64, start int64, idx uint64) (segment, error) {
	g := segment{id: id, first: idx}
	f, err := s.openAt(segName(id), unix.O_RDWR, 0)
	if err != nil {
		return g, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return g, err
	}
	size := fi.Size()
	var m [len(magic)]byte
	n, err := f.ReadAt(m[:], 0)
	if err != nil && err != io.EOF {
		return g, fmt.Errorf("read %s: %w", segName(id), err)
	}
	if string(m[:n]) != magic[:n] {
		return g, fmt.Errorf("%s: not a spool segment", segName(id))
	}
	if n < len(magic) {
		// Created, and the crash came before its magic was written.
		if err := f.Truncate(0); err != nil {
			return g, fmt.Errorf("cut %s: %w", segName(id), err)
		}
		if _, err := f.WriteAt([]byte(magic), 0); err != nil {
			return g, fmt.Errorf("write %s: %w", segName(id), err)
		}
		s.torn += int64(n)
		g.size = int64(len(magic))
		return g, nil
	}
	start = min(start, size)
	r := io.NewSectionReader(f, start, size-start)
	buf := make([]byte, 0, 64<<10)
	off := start
	var hdr [HeaderSize]byte
	for off < size {
		if size-off < HeaderSize {
			break
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return g, fmt.Errorf("read %s: %w", segName(id), err)
		}
		l := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		if l > MaxRecord || size-off-HeaderSize < l {
			break
		}
		buf = slices.Grow(buf[:0], int(l))[:l]
		if _, err := io.ReadFull(r, buf); err != nil {
			return g, fmt.Errorf("read %s: %w", segName(id), err)
		}
		if checksum(hdr[:], buf) != binary.LittleEndian.Uint32(hdr[4:8]) {
			break
		}
		off += HeaderSize + l
		g.n++
	}
	if off < size {
		if err := f.Truncate(off); err != nil {
			return g, fmt.Errorf("cut torn record in %s: %w", segName(id), err)
		}
		s.torn += size - off
	}
	g.size = off
	return g, nil
}

// checksum is the CRC-32C of a record's length, time and payload.
func checksum(hdr, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[0:4])
	c = crc32.Update(c, castagnoli, hdr[8:16])
	return crc32.Update(c, castagnoli, payload)
}

// loadHead returns the head position of the valid slot with the highest
// sequence number; (0, 0) when there is none.
func (s *Spool) loadHead() (uint64, int64) {
	var b [2 * slotSize]byte
	n, _ := s.headF.ReadAt(b[:], 0)
	var seg uint64
	var off int64
	for i := 0; i+slotSize <= n; i += slotSize {
		sl := b[i : i+slotSize]
		if crc32.Checksum(sl[:24], castagnoli) != binary.LittleEndian.Uint32(sl[24:28]) {
			continue
		}
		if seq := binary.LittleEndian.Uint64(sl[0:8]); seq >= s.headSeq {
			s.headSeq = seq
			seg = binary.LittleEndian.Uint64(sl[8:16])
			off = int64(binary.LittleEndian.Uint64(sl[16:24]))
		}
	}
	return seg, off
}

// saveHead writes the head to the slot after the last one written.
func (s *Spool) saveHead() error {
	s.headSeq++
	b := s.headSlot[:]
	binary.LittleEndian.PutUint64(b[0:8], s.headSeq)
	binary.LittleEndian.PutUint64(b[8:16], s.head.seg)
	binary.LittleEndian.PutUint64(b[16:24], uint64(s.head.off))
	binary.LittleEndian.PutUint32(b[24:28], crc32.Checksum(b[:24], castagnoli))
	if _, err := s.headF.WriteAt(b, int64(s.headSeq%2)*slotSize); err != nil {
		return fmt.Errorf("spool %s: write head: %w", s.path, err)
	}
	return nil
}

func (s *Spool) unlink(id uint64) error {
	if err := unix.Unlinkat(s.dirfd, segName(id), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete %s: %w", segName(id), err)
	}
	return nil
}

// newSegment creates segment id as the active one; the previous active
// segment is fsynced and closed first, so a closed segment is on disk.
func (s *Spool) newSegment(id uint64) error {
	if s.w != nil {
		if s.dirty {
			if err := s.w.Sync(); err != nil {
				return fmt.Errorf("spool %s: fsync: %w", s.path, err)
			}
			s.fsyncs++
			s.dirty = false
		}
		s.w.Close()
		s.w = nil
	}
	f, err := s.openAt(segName(id), unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.path, err)
	}
	if _, err := f.Write([]byte(magic)); err != nil {
		f.Close()
		s.unlink(id)
		return fmt.Errorf("spool %s: write %s: %w", s.path, segName(id), err)
	}
	// The new name must survive a power cut as well as its content.
	if err := unix.Fsync(s.dirfd); err != nil {
		f.Close()
		return fmt.Errorf("spool %s: fsync directory: %w", s.path, err)
	}
	var first uint64
	if n := len(s.segs); n > 0 {
		first = s.segs[n-1].end()
	}
	s.w = f
	s.segs = append(s.segs, segment{id: id, size: int64(len(magic)), first: first})
	s.disk += int64(len(magic))
	return nil
}

// Append writes one record, timestamped t, and returns how many records
// not yet acknowledged were dropped (the oldest segment) to make room.
// When it returns nil, the record is in the file.
func (s *Spool) Append(rec []byte, t time.Time) (dropped int, err error) {
	if len(rec) > MaxRecord {
		return 0, ErrTooLarge
	}
	need := HeaderSize + int64(len(rec))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	act := &s.segs[len(s.segs)-1]
	// No active file: starting the last segment failed (disk full); try
	// again with a new one.
	if s.w == nil || (act.size+need > s.segMax && act.size > int64(len(magic))) {
		if err := s.newSegment(act.id + 1); err != nil {
			return 0, err
		}
	}
	before := s.dropped
	for s.disk+need > s.max && len(s.segs) > 1 {
		if err := s.dropOldest(); err != nil {
			return int(s.dropped - before), err
		}
	}
	b := s.wbuf[:0]
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rec)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(t.UnixNano()))
	b = append(b, rec...)
	binary.LittleEndian.PutUint32(b[4:8], checksum(b[:HeaderSize], rec))
	s.wbuf = b
	act = &s.segs[len(s.segs)-1]
	n, err := s.w.Write(b)
	if err != nil {
		if n > 0 {
			// Disk full mid-record: cut it, so the file stays whole.
			if terr := s.w.Truncate(act.size); terr != nil {
				err = errors.Join(err, terr)
			}
		}
		return int(s.dropped - before), fmt.Errorf("spool %s: write: %w", s.path, err)
	}
	act.size += need
	act.n++
	s.disk += need
	s.dirty = true
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return int(s.dropped - before), nil
}

// dropOldest deletes the oldest segment, counting its records not yet
// acknowledged as dropped.
func (s *Spool) dropOldest() error {
	g := s.segs[0]
	if lost := g.end() - max(g.first, min(s.head.idx, g.end())); lost > 0 {
		s.dropped += lost
	}
	s.segs = s.segs[1:]
	s.disk -= g.size
	next := Cursor{seg: s.segs[0].id, off: int64(len(magic)), idx: s.segs[0].first}
	if s.head.seg <= g.id {
		s.head = next
		if err := s.saveHead(); err != nil {
			return err
		}
	}
	if s.read.seg <= g.id {
		s.read = next
	}
	return s.unlink(g.id)
}

// normalize moves a cursor at the end of a closed segment to the start
// of the next one.
func (s *Spool) normalize(c Cursor) Cursor {
	for i := 0; i+1 < len(s.segs); i++ {
		if s.segs[i].id == c.seg && c.off >= s.segs[i].size {
			c = Cursor{seg: s.segs[i+1].id, off: int64(len(magic)), idx: s.segs[i+1].first}
		}
	}
	return c
}

// Wake returns a channel that receives a token after an Append.
func (s *Spool) Wake() <-chan struct{} { return s.wake }

// Pending reports whether records wait to be read.
func (s *Spool) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read.idx < s.segs[len(s.segs)-1].end()
}

// Read hands out the records after the last one read, in order, up to
// maxN records and about maxBytes of payload (at least one record): fn
// gets each payload, valid only during the call. It returns the cursor
// after the last record read (what to pass to Ack once the receiver has
// them), and how many records it skipped because the disk returned
// something that no longer checks (counted by the caller as lost).
func (s *Spool) Read(maxN, maxBytes int, fn func(rec []byte)) (end Cursor, n, corrupt int, err error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Cursor{}, 0, 0, ErrClosed
	}
	c := s.read
	if c.idx <= s.head.idx {
		c = s.head
	}
	c = s.normalize(c)
	segs := slices.Clone(s.segs)
	s.mu.Unlock()

	budget, full := maxBytes, false
	for n < maxN {
		i := slices.IndexFunc(segs, func(g segment) bool { return g.id == c.seg })
		if i < 0 {
			break // dropped meanwhile; the next Read starts at the head
		}
		g := segs[i]
		if c.off >= g.size {
			if i+1 == len(segs) {
				break
			}
			c = Cursor{seg: segs[i+1].id, off: int64(len(magic)), idx: segs[i+1].first}
			continue
		}
		want := min(g.size-c.off, int64(max(maxBytes, MaxRecord)+HeaderSize))
		buf, rerr := s.pread(g.id, c.off, want)
		if rerr != nil {
			err = rerr
			break
		}
		p := 0
		for n < maxN && len(buf)-p >= HeaderSize {
			h := buf[p : p+HeaderSize]
			l := int(binary.LittleEndian.Uint32(h[0:4]))
			if l > MaxRecord {
				p = -1
				break
			}
			if len(buf)-p-HeaderSize < l {
				break
			}
			rec := buf[p+HeaderSize : p+HeaderSize+l]
			if checksum(h, rec) != binary.LittleEndian.Uint32(h[4:8]) {
				p = -1
				break
			}
			if n > 0 && l > budget {
				full = true
				break
			}
			budget -= l
			fn(rec)
			n++
			p += HeaderSize + l
			c.off += int64(HeaderSize + l)
			c.idx++
		}
		if p < 0 {
			// Changed on disk since it was written and checked: skip
			// the rest of the segment.
			corrupt += int(g.end() - c.idx)
			c = Cursor{seg: g.id, off: g.size, idx: g.end()}
			continue
		}
		if full || p == 0 {
			break
		}
	}
	s.mu.Lock()
	if c.idx >= s.read.idx && c.idx >= s.head.idx {
		s.read = c
	} else {
		c = s.read
	}
	s.mu.Unlock()
	return c, n, corrupt, err
}

// pread reads want bytes of segment id at off, with a descriptor the
// reader keeps open on its current segment.
func (s *Spool) pread(id uint64, off, want int64) ([]byte, error) {
	if s.rf == nil || s.rfID != id {
		if s.rf != nil {
			s.rf.Close()
			s.rf = nil
		}
		f, err := s.openAt(segName(id), unix.O_RDONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("spool %s: %w", s.path, err)
		}
		s.rf, s.rfID = f, id
	}
	if int64(cap(s.rbuf)) < want {
		s.rbuf = make([]byte, want)
	}
	buf := s.rbuf[:want]
	n, err := s.rf.ReadAt(buf, off)
	if err != nil && !(err == io.EOF && int64(n) == want) {
		return nil, fmt.Errorf("spool %s: read %s: %w", s.path, segName(id), err)
	}
	return buf[:n], nil
}

// Ack records that every record before c has been acknowledged by the
// receiver, and returns how many of them were still in the spool (the
// others were dropped for room meanwhile); segments left with none are
// deleted.
func (s *Spool) Ack(c Cursor) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || c.idx <= s.head.idx {
		return 0, nil
	}
	n := c.idx - s.head.idx
	s.head = s.normalize(c)
	if s.read.idx <= s.head.idx {
		s.read = s.head
	}
	err := s.saveHead()
	for len(s.segs) > 1 && s.segs[0].id < s.head.seg {
		g := s.segs[0]
		s.segs = s.segs[1:]
		s.disk -= g.size
		err = errors.Join(err, s.unlink(g.id))
	}
	if err == nil {
		err = s.emptyActive()
	}
	return n, err
}

// truncateAt is the size from which an active segment whose records are
// all acknowledged is emptied, giving its space back (the only way a
// spool's disk use shrinks while records keep coming slowly).
const truncateAt = 256 << 10

// emptyActive cuts the active segment back to its magic when every
// record in the spool is acknowledged. The head is made durable first:
// a head that still pointed into the old content would skip records
// appended after the cut.
func (s *Spool) emptyActive() error {
	last := &s.segs[len(s.segs)-1]
	if len(s.segs) != 1 || s.head.idx != last.end() || last.size < truncateAt || s.w == nil {
		return nil
	}
	s.head = Cursor{seg: last.id, off: int64(len(magic)), idx: last.end()}
	s.read = s.head
	if err := s.saveHead(); err != nil {
		return err
	}
	if err := s.headF.Sync(); err != nil {
		return fmt.Errorf("spool %s: fsync head: %w", s.path, err)
	}
	if err := s.w.Truncate(int64(len(magic))); err != nil {
		return fmt.Errorf("spool %s: empty %s: %w", s.path, segName(last.id), err)
	}
	s.disk -= last.size - int64(len(magic))
	last.first, last.n, last.size = last.end(), 0, int64(len(magic))
	return nil
}

// Len returns how many records are not yet acknowledged.
func (s *Spool) Len() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.segs[len(s.segs)-1].end() - s.head.idx
}

// Rewind makes the next Read start again at the first record not
// acknowledged: the receiver did not take what was read since.
func (s *Spool) Rewind() {
	s.mu.Lock()
	s.read = s.head
	s.mu.Unlock()
}

// Sync fsyncs the active segment if records were appended since the
// last fsync.
func (s *Spool) Sync() error {
	s.mu.Lock()
	if s.closed || !s.dirty || s.w == nil {
		s.mu.Unlock()
		return nil
	}
	s.dirty = false
	// A descriptor of its own: Append goes on meanwhile, and may close
	// the segment to start the next one.
	fd, err := unix.Dup(int(s.w.Fd()))
	s.mu.Unlock()
	if err == nil {
		err = unix.Fsync(fd)
		unix.Close(fd)
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return fmt.Errorf("spool %s: fsync: %w", s.path, err)
	}
	s.mu.Lock()
	s.fsyncs++
	s.mu.Unlock()
	return nil
}

// Stats returns the spool's counters; Oldest reads the head record's
// time from the disk.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Bytes: s.disk, Dropped: s.dropped, TornBytes: s.torn, Fsyncs: s.fsyncs}
	if s.closed {
		return st
	}
	st.Events = s.segs[len(s.segs)-1].end() - s.head.idx
	if st.Events > 0 {
		h := s.normalize(s.head)
		f, err := s.openAt(segName(h.seg), unix.O_RDONLY, 0)
		if err == nil {
			if _, err := f.ReadAt(s.scratch[:], h.off); err == nil {
				st.Oldest = time.Unix(0, int64(binary.LittleEndian.Uint64(s.scratch[8:16])))
			}
			f.Close()
		}
	}
	return st
}

// Close fsyncs the active segment and the head and closes the files.
// Records not acknowledged stay for the next Open.
func (s *Spool) Close() error {
	err := s.Sync()
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.headF != nil {
		if serr := s.headF.Sync(); serr != nil && err == nil {
			err = fmt.Errorf("spool %s: fsync head: %w", s.path, serr)
		}
	}
	s.closeFiles()
	return err
}

func (s *Spool) closeFiles() {
	for _, f := range []*os.File{s.w, s.rf, s.headF, s.dir} {
		if f != nil {
			f.Close()
		}
	}
	s.w, s.rf, s.headF, s.dir = nil, nil, nil, nil
}
