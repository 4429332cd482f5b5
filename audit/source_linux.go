//go:build linux

package audit

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/event"
)

// Options configure a Source.
type Options struct {
	// StateFile keeps, while connlogd's rules are in, the enabled flag to
	// restore (see InstallRules); "" keeps it in memory only.
	StateFile string
	// Keep is how long a call waits for its socket to be reported.
	Keep time.Duration
	// Owner describes the process of a call, as events show owners.
	Owner func(c *Call) *event.Process
	// ReadBuffer is the read-log receive buffer to ask for (0: default).
	ReadBuffer int
	// InitialNetns runs fn in the initial network namespace: the kernel
	// multicasts audit records to sockets of that namespace only. nil runs
	// fn where the caller is.
	InitialNetns func(fn func() error) error
	// Grace is how long an event of a socket no poll saw may wait for
	// the records of its call (see Joiner.Hold); 0 holds nothing back.
	Grace time.Duration
}

// Source is the audit side of attribution: the read-log subscription,
// connlogd's rules when it may add them, and the Joiner the calls go to.
// One goroutine uses it, but for WaitReadable.
type Source struct {
	rd    *Reader
	rules *Rules // nil: the rules already present are used
	asm   Assembler
	j     *Joiner
	opts  Options
	path  []byte // scratch for /proc paths
	link  []byte
	// RulesErr says why connlogd's own rules are not in (nil when they
	// are): records then come only from rules already present.
	RulesErr error
}

// ErrNoAudit: the kernel has no audit support (CONFIG_AUDIT off).
var ErrNoAudit = errors.New("the kernel has no audit support")

// Open subscribes to the read-log group and installs connlogd's rules.
// An error means audit attribution is impossible (no CAP_AUDIT_READ, no
// audit in the kernel, not the initial pid namespace); failing to
// install rules is not one: it is in RulesErr, and the records of the
// rules already present are used.
func Open(opts Options) (*Source, error) {
	var rd *Reader
	var err error
	open := func() error {
		rd, err = OpenReader(opts.ReadBuffer)
		return err
	}
	if opts.InitialNetns != nil {
		if e := opts.InitialNetns(open); e != nil && err == nil {
			return nil, fmt.Errorf("audit: records are sent to the initial network namespace only, and it cannot be entered: %w", e)
		}
	} else {
		open()
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
			return nil, fmt.Errorf("audit: %w (%w)", ErrNoAudit, err)
		case errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("audit: reading audit records needs CAP_AUDIT_READ: %w", err)
		}
		return nil, fmt.Errorf("audit: %w", err)
	}
	s := &Source{rd: rd, opts: opts}
	s.j = NewJoiner(opts.Keep, s.held)
	s.rules, err = InstallRules(opts.StateFile)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("adding audit rules needs CAP_AUDIT_CONTROL in the initial pid namespace: %w", err)
		}
		s.RulesErr = err
		s.rules = nil
	}
	return s, nil
}

// Rules returns connlogd's installed rules, or nil.
func (s *Source) Rules() *Rules { return s.rules }

// WaitReadable blocks until records are queued (see Reader).
func (s *Source) WaitReadable() error { return s.rd.WaitReadable() }

// maxDrain bounds the records one Drain reads, so a flood is taken in
// slices while the caller gets back to its other work.
const maxDrain = 4096

// Drain reads the queued records, learns of each call's process what
// the records lack while it may still run, and hands the calls to the
// Joiner. more says records may be left. It returns ErrOverrun when the
// kernel dropped records on the subscription.
func (s *Source) Drain(now time.Time) (more bool, err error) {
	n, err := s.rd.Drain(maxDrain, func(typ uint16, text []byte) {
		c := s.asm.Add(typ, text)
		if c == nil {
			return
		}
		sg, ok := Sight(c)
		if !ok {
			return
		}
		sg.Netns = s.netnsOf(sg.PID)
		if sg.FD >= 0 {
			sg.Inode = s.socketAt(sg.PID, sg.FD)
		}
		sg.Owner = s.opts.Owner(c)
		s.j.Add(sg)
	})
	s.j.Seen(s.asm.Latest)
	s.j.Expire(now)
	return n >= maxDrain, err
}

// Attribute gives ev the owner of the call that made its socket when
// it has none, or holds it back for Release while the records of that
// call may still come (see Joiner.Attribute); held reports the latter.
func (s *Source) Attribute(ev *event.Event, netns uint64) (held bool) {
	return s.j.Attribute(ev, netns, s.opts.Grace)
}

// Release hands over the held events that are ready (see Joiner.Release).
func (s *Source) Release(now time.Time, all bool, emit func(*event.Event)) {
	s.j.Release(now, all, emit)
}

// NextRelease says when a held event's grace runs out.
func (s *Source) NextRelease() (time.Time, bool) { return s.j.NextRelease() }

// Stats returns the Joiner's counters.
func (s *Source) Stats() JoinStats { return s.j.Stats() }

// Malformed returns how many records did not parse, and the last error.
func (s *Source) Malformed() (uint64, error) { return s.asm.Malformed, s.asm.LastErr }

// Close removes connlogd's rules, restores the enabled flag and ends the
// subscription.
func (s *Source) Close() error {
	var errs []error
	if s.rules != nil {
		errs = append(errs, s.rules.Close())
	}
	errs = append(errs, s.rd.Close())
	return errors.Join(errs...)
}

func (s *Source) procPath(pid int32, tail string) string {
	s.path = append(s.path[:0], "/proc/"...)
	s.path = strconv.AppendInt(s.path, int64(pid), 10)
	s.path = append(s.path, tail...)
	return string(s.path)
}

// netnsOf returns the inode of pid's network namespace, 0 when it is gone.
func (s *Source) netnsOf(pid int32) uint64 {
	var st unix.Stat_t
	if unix.Stat(s.procPath(pid, "/ns/net"), &st) != nil {
		return 0
	}
	return st.Ino
}

// socketAt returns the socket inode at pid's descriptor fd, 0 when there
// is none (any more).
func (s *Source) socketAt(pid, fd int32) uint32 {
	if cap(s.link) < 64 {
		s.link = make([]byte, 64)
	}
	p := s.procPath(pid, "/fd/")
	p += strconv.Itoa(int(fd))
	n, err := unix.Readlink(p, s.link[:64])
	if err != nil {
		return 0
	}
	ino, ok := attribution.SocketLink(s.link[:n])
	if !ok {
		return 0
	}
	return ino
}

func (s *Source) held(pid, fd int32, inode uint32) bool {
	return s.socketAt(pid, fd) == inode
}

// Lost returns how many records the kernel dropped since the last call
// (its backlog full, its rate limit hit); known is false when connlogd
// cannot read the counter (no CAP_AUDIT_CONTROL).
func (s *Source) Lost() (n uint64, known bool, err error) {
	if s.rules == nil {
		return 0, false, nil
	}
	n, err = s.rules.Lost()
	return n, err == nil, err
}
