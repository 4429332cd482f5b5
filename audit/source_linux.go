//go:build linux

package audit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
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
	j     *Joiner
	opts  Options

	// The reading goroutine's (Read).
	asm      Assembler
	rscratch scratch
	cfMu     sync.Mutex // Close takes cf from under Read
	cf       *cookieFinder
	batch    []pending // read, not yet published

	mu       sync.Mutex // guards what Read hands to Take
	inbox    []pending
	spare    []pending
	latest   time.Time
	overruns uint64
	dropped  uint64 // calls Take was too slow to take

	jscratch scratch // the joining goroutine's, for held
	probed   time.Time
	self     int32 // connlogd's pid: its probes are no socket's call
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
	s := &Source{rd: rd, opts: opts, cf: newCookieFinder(opts.Keep), self: int32(os.Getpid())}
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

// maxDrain bounds the records one read takes before handing them over.
const maxDrain = 4096

// Read waits for records, reads what is queued, learns of each call's
// process what the records lack (its network namespace, the socket its
// descriptor holds) while it may still run, and keeps the calls for
// Take. One goroutine calls it in a loop, apart from the one that joins:
// learning must not wait for the joining side to be free, or short-lived
// processes are gone before they are looked at. It returns an error
// once the Source is closed.
func (s *Source) Read() error {
	if err := s.rd.WaitReadable(); err != nil {
		return err
	}
	for {
		n, err := s.rd.Drain(maxDrain, s.record)
		s.publish()
		s.mu.Lock()
		s.latest = s.asm.Latest
		if errors.Is(err, ErrOverrun) {
			s.overruns++
			err = nil
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if n < maxDrain {
			return nil
		}
	}
}

// record takes one record, on the reading goroutine.
func (s *Source) record(typ uint16, text []byte) {
	c := s.asm.Add(typ, text)
	if c == nil {
		return
	}
	sg, ok := Sight(c)
	if !ok || sg.PID == s.self {
		return
	}
	sg.Netns = s.netnsOf(sg.PID)
	if sg.FD >= 0 {
		sg.Inode = s.socketAt(&s.rscratch, sg.PID, sg.FD)
	}
	// The owner is described on the joining side: Owner may wait for
	// locks, and this side must not.
	s.batch = append(s.batch, pending{sg, *c})
}

// publish looks up the cookies the batch's calls need, one dump per
// peer, and hands the batch to Take.
func (s *Source) publish() {
	s.cfMu.Lock()
	if s.cf != nil {
		s.cf.resolve(s.batch)
	}
	s.cfMu.Unlock()
	s.mu.Lock()
	for _, p := range s.batch {
		if len(s.inbox) < maxCalls {
			s.inbox = append(s.inbox, p)
		} else {
			s.dropped++
		}
	}
	s.mu.Unlock()
	clear(s.batch)
	s.batch = s.batch[:0]
}

// Take hands the calls Read kept to the Joiner, forgets calls made more
// than Keep before horizon, and returns how many times records were lost
// on the subscription (ErrOverrun) since the last Take. horizon is now,
// or the time of the oldest socket change the caller has yet to hand to
// Attribute: calls that change may claim must be kept however late it
// comes.
func (s *Source) Take(horizon time.Time) (overruns uint64) {
	s.mu.Lock()
	in := s.inbox
	s.inbox = s.spare[:0]
	latest := s.latest
	overruns, s.overruns = s.overruns+s.dropped, 0
	s.dropped = 0
	s.mu.Unlock()
	for i := range in {
		in[i].sg.Owner = s.opts.Owner(&in[i].call)
		s.j.Add(in[i].sg)
		in[i] = pending{}
	}
	s.spare = in[:0]
	s.j.Seen(latest)
	s.j.Expire(horizon)
	return overruns
}

// Attribute gives ev the owner of the call that made its socket when
// it has none, or holds it back for Release while the records of that
// call may still come (see Joiner.Attribute); held reports the latter.
// now is when the caller got ev.
func (s *Source) Attribute(ev *event.Event, netns uint64, now time.Time) (held bool) {
	return s.j.Attribute(ev, netns, now, s.opts.Grace)
}

// Release hands over the held events that are ready (see Joiner.Release).
func (s *Source) Release(now time.Time, all bool, emit func(*event.Event)) {
	s.j.Release(now, all, emit)
}

// minProbeGap bounds how often Probe makes a call.
const minProbeGap = 20 * time.Millisecond

// Probe makes an audited call of connlogd's own (a connect of a UDP
// socket to 127.0.0.1:9, which sends nothing) so that its record, once
// read, tells the Joiner that every call made before it has been read
// too: a held event then goes out at once, whether or not other
// processes' calls follow. At most one every 20 ms; the records are in
// the audit log with connlogd's pid. It does nothing when connlogd's
// rules are not in.
func (s *Source) Probe(now time.Time) {
	if s.rules == nil || now.Sub(s.probed) < minProbeGap {
		return
	}
	s.probed = now
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}})
	unix.Close(fd)
}

// Held returns how many events are held back.
func (s *Source) Held() int { return s.j.Held() }

// NextRelease says when a held event's grace runs out.
func (s *Source) NextRelease() (time.Time, bool) { return s.j.NextRelease() }

// Stats returns the Joiner's counters.
func (s *Source) Stats() JoinStats { return s.j.Stats() }

// Close removes connlogd's rules, restores the enabled flag and ends the
// subscription.
func (s *Source) Close() error {
	var errs []error
	if s.rules != nil {
		errs = append(errs, s.rules.Close())
	}
	errs = append(errs, s.rd.Close())
	s.cfMu.Lock()
	s.cf.close()
	s.cf = nil
	s.cfMu.Unlock()
	return errors.Join(errs...)
}

// pending is a call read, and learnt about, not yet joined.
type pending struct {
	sg   Sighting
	call Call
}

// scratch is one goroutine's buffers for /proc paths and links.
type scratch struct {
	path []byte
	link [64]byte
}

func (b *scratch) procPath(pid int32, tail string, fd int32) string {
	b.path = append(b.path[:0], "/proc/"...)
	b.path = strconv.AppendInt(b.path, int64(pid), 10)
	b.path = append(b.path, tail...)
	if fd >= 0 {
		b.path = strconv.AppendInt(b.path, int64(fd), 10)
	}
	return string(b.path)
}

// netnsOf returns the inode of pid's network namespace, 0 when it is gone.
func (s *Source) netnsOf(pid int32) uint64 {
	var st unix.Stat_t
	if unix.Stat(s.rscratch.procPath(pid, "/ns/net", -1), &st) != nil {
		return 0
	}
	return st.Ino
}

// socketAt returns the socket inode at pid's descriptor fd, 0 when there
// is none (any more).
func (s *Source) socketAt(b *scratch, pid, fd int32) uint32 {
	n, err := unix.Readlink(b.procPath(pid, "/fd/", fd), b.link[:])
	if err != nil {
		return 0
	}
	ino, ok := attribution.SocketLink(b.link[:n])
	if !ok {
		return 0
	}
	return ino
}

func (s *Source) held(pid, fd int32, inode uint32) bool {
	return s.socketAt(&s.jscratch, pid, fd) == inode
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
