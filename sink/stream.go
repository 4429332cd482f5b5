package sink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/connlogd/connlogd/event"
)

// DefaultFileMode is the mode of a file sink created without one.
const DefaultFileMode fs.FileMode = 0o640

const (
	// flushAt: a Write that would grow the buffer past this flushes
	// first, so a batch costs a few large write(2)s rather than one per
	// line.
	flushAt = 64 << 10
	// maxPending bounds memory while the output fails (disk full): the
	// buffer keeps up to this much for a later flush, then events are
	// dropped and counted.
	maxPending = 1 << 20
)

// lineWriter is the zapcore.WriteSyncer of the stdout and file sinks. zap
// hands it one whole encoded line per Write; it only ever writes whole
// buffers of whole lines, and after a short write it keeps the exact
// unwritten tail, so a line cut by a failure is completed by the next
// flush instead of being abandoned mid-way.
//
// zapcore.BufferedWriteSyncer is not used: its flush timer goroutine would
// write outside the caller's batches, and the daemon already syncs once
// per poll.
type lineWriter struct {
	name string
	w    io.Writer

	// File sinks only: the open file (also w), its path and creation mode.
	f    *os.File
	path string
	mode fs.FileMode

	buf []byte
	// mid says buf starts in the middle of a line whose head is already
	// in the output (a short write).
	mid bool

	written atomic.Uint64
	dropped drops
	errors  atomic.Uint64
}

func newStreamWriter(name string, w io.Writer) *lineWriter {
	return &lineWriter{name: name, w: w, buf: make([]byte, 0, flushAt)}
}

// Write buffers one line. It fails only when the line is dropped: the
// output is failing and maxPending is reached.
func (l *lineWriter) Write(p []byte) (int, error) {
	if len(l.buf)+len(p) > flushAt {
		if err := l.flush(); err != nil && len(l.buf)+len(p) > maxPending {
			l.dropped.add(DropOutputFailed, 1)
			return 0, err
		}
		// A failed flush keeps its lines for the next one; Sync reports it.
	}
	l.buf = append(l.buf, p...)
	l.written.Add(1)
	return len(p), nil
}

// Sync writes the buffer out. It does not fsync: lines in the page cache
// survive a daemon crash, and an fsync per poll would cost more than the
// poll. Close fsyncs.
func (l *lineWriter) Sync() error { return l.flush() }

func (l *lineWriter) write(_ *event.Event, line []byte) error {
	_, err := l.Write(line)
	return err
}

func (l *lineWriter) lose(err error) error {
	l.dropped.add(DropOutputFailed, 1)
	return fmt.Errorf("%s: %w", l.name, err)
}

func (l *lineWriter) sync() error { return l.flush() }

func (l *lineWriter) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	n, err := l.w.Write(l.buf)
	if n >= len(l.buf) && err == nil {
		l.buf, l.mid = l.buf[:0], false
		if cap(l.buf) > 4*flushAt {
			l.buf = make([]byte, 0, flushAt) // give back a failure's backlog
		}
		return nil
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	l.errors.Add(1)
	if n > 0 {
		l.mid = l.buf[n-1] != '\n'
		l.buf = l.buf[:copy(l.buf, l.buf[n:])]
	}
	return fmt.Errorf("%s: write: %w", l.name, bare(err))
}

// reopen opens the path again, for log rotation: after a rename the
// old descriptor still writes to the renamed file. If the open fails the
// old descriptor is kept, so no event is lost to a failed rotation.
func (l *lineWriter) reopen() error {
	if l.f == nil {
		return nil
	}
	nf, err := openFile(l.path, l.mode)
	if err != nil {
		return fmt.Errorf("%s: reopen: %w", l.name, err)
	}
	// Lines buffered before the rotation belong to the old file.
	if l.flush() != nil && l.mid {
		// The old file ends in a cut line; its tail must not start the
		// new file, so that one event is lost. Whole lines move over.
		i := bytes.IndexByte(l.buf, '\n')
		l.buf = l.buf[:copy(l.buf, l.buf[i+1:])]
		l.mid = false
		l.dropped.add(DropOutputFailed, 1)
	}
	old := l.f
	l.f, l.w = nf, nf
	if err := old.Close(); err != nil {
		// On NFS a failed close can mean lost data: say so, but the new
		// file is in use.
		return fmt.Errorf("%s: close rotated file: %w", l.name, bare(err))
	}
	return nil
}

// close flushes and, for a file, fsyncs and closes it, so that a clean
// stop leaves every event on disk. A caller's writer (stdout) is left
// open.
func (l *lineWriter) close() error {
	err := l.flush()
	if l.f != nil {
		// EINVAL: a device or FIFO at the path, which has nothing to sync.
		if serr := l.f.Sync(); serr != nil && !errors.Is(serr, syscall.EINVAL) && err == nil {
			err = fmt.Errorf("%s: fsync: %w", l.name, bare(serr))
		}
		if cerr := l.f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: close: %w", l.name, bare(cerr))
		}
		l.f = nil
	}
	if len(l.buf) > 0 {
		l.dropped.add(DropShutdown, uint64(bytes.Count(l.buf, []byte{'\n'})))
		l.buf = l.buf[:0]
	}
	return err
}

func (l *lineWriter) stats() Stats {
	st := Stats{Sink: l.name, Written: l.written.Load(), Errors: l.errors.Load()}
	l.dropped.fill(&st)
	return st
}
