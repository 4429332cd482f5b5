//go:build linux

package diag

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/internal/nlsock"
	"github.com/connlogd/connlogd/snapshot"
)

const (
	// recvBufLen holds the largest datagram a dump sends: the kernel caps
	// dump chunks at 32 KiB (netlink_dump, max_recvmsg_len).
	recvBufLen = 64 << 10
	// lookupBatch bounds the replies in flight so that they fit the
	// socket's default receive buffer.
	lookupBatch = 64
	// defaultTimeout bounds one request; a kernel that stops answering
	// must not hang the poll loop.
	defaultTimeout = 10 * time.Second
)

// Conn is a sock_diag netlink socket. Its methods are safe for concurrent
// use; requests are serialised.
type Conn struct {
	mu      sync.Mutex
	fd      int
	closed  bool
	seq     uint32
	buf     []byte
	req     []byte
	from    unix.RawSockaddrNetlink
	fromLen uint32
	pfd     [1]unix.PollFd
	stats   snapshot.Stats
	lastBad error
	// answered marks lookup replies received, per batch slot.
	answered [lookupBatch]bool
	timeout  time.Duration
	// tap, when set (by tests), sees every dump datagram as received.
	tap func([]byte)
	// flush takes the table of a DumpEach each time it holds flushAt
	// sockets.
	flush   func(*snapshot.Table) *snapshot.Table
	flushAt int
}

// Open opens a sock_diag socket connected to the kernel.
func Open() (*Conn, error) {
	c := &Conn{
		buf:     make([]byte, recvBufLen),
		req:     make([]byte, 0, lookupBatch*(snapshot.HeaderLen+56)),
		timeout: defaultTimeout,
	}
	var seed [4]byte
	_, _ = rand.Read(seed[:]) // never fails on Linux; a zero seed would still work
	c.seq = binary.NativeEndian.Uint32(seed[:])
	fd, err := openSocket()
	if err != nil {
		return nil, opErr("open", err)
	}
	c.fd = fd
	return c, nil
}

// openSocket opens the dump socket: connected to the kernel, which then
// refuses unicasts to it from anyone else.
func openSocket() (int, error) { return nlsock.Dial(unix.NETLINK_SOCK_DIAG) }

// Close closes the socket. It is idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if err := unix.Close(c.fd); err != nil {
		return opErr("close", err)
	}
	return nil
}

// Stats returns the cumulative counts of refused messages.
func (c *Conn) Stats() snapshot.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// LastMalformed returns the most recent parse error, to log beside the
// Malformed count.
func (c *Conn) LastMalformed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastBad
}

// Dump empties t and fills it with the sockets of every request. On error
// t holds a partial table and must not be diffed.
func (c *Conn) Dump(t *snapshot.Table, reqs []Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return opErr("dump", net.ErrClosed)
	}
	t.Reset()
	for _, r := range reqs {
		if err := c.dumpOne(t, r); err != nil {
			c.resetLocked()
			return opErr("dump "+r.String(), err)
		}
	}
	return nil
}

// DumpEach is Dump for a caller that takes the table in chunks as it is
// read, instead of holding it whole: each time t holds n sockets or more
// (at a datagram's end), flush gets it and returns the table to fill
// next, which DumpEach empties. It returns the table holding the rest.
// On error the chunks flushed and the one returned are part of a dump.
func (c *Conn) DumpEach(t *snapshot.Table, reqs []Request, n int, flush func(*snapshot.Table) *snapshot.Table) (*snapshot.Table, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Reset()
	if c.closed {
		return t, opErr("dump", net.ErrClosed)
	}
	c.flushAt, c.flush = n, flush
	defer func() { c.flush = nil }()
	for _, r := range reqs {
		var err error
		if t, err = c.dumpEach(t, r); err != nil {
			c.resetLocked()
			return t, opErr("dump "+r.String(), err)
		}
	}
	return t, nil
}

func (c *Conn) dumpOne(t *snapshot.Table, r Request) error {
	_, err := c.dumpEach(t, r)
	return err
}

// dumpEach dumps r into t, handing it to c.flush, when set, each time it
// holds c.flushAt sockets; it returns the table being filled.
func (c *Conn) dumpEach(t *snapshot.Table, r Request) (*snapshot.Table, error) {
	c.seq++
	c.req = snapshot.AppendDumpRequest(c.req[:0], c.seq, r.Family, r.Proto, r.Ext, r.States, r.Bytecode)
	if err := c.send(); err != nil {
		return t, err
	}
	p := snapshot.DumpParser{Seq: c.seq, Proto: r.Proto, Table: t, Stats: &c.stats}
	deadline := time.Now().Add(c.timeout)
	for {
		b, err := c.recv(deadline)
		if err != nil {
			return p.Table, err
		}
		if c.tap != nil {
			c.tap(b)
		}
		done, err := p.Feed(b)
		if p.LastErr != nil {
			c.lastBad = p.LastErr
		}
		if done {
			return p.Table, kernelErr(err)
		}
		if c.flush != nil && p.Table.Len() >= c.flushAt {
			p.Table = c.flush(p.Table)
			p.Table.Reset()
			// The timeout bounds the kernel's silence, not the time
			// the caller took with the chunk.
			deadline = time.Now().Add(c.timeout)
		}
	}
}

// Lookup asks the kernel for each key by exact match and stores the
// answers in out, which must be as long as keys.
func (c *Conn) Lookup(keys []snapshot.Key, out []snapshot.LookupResult) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return opErr("lookup", net.ErrClosed)
	}
	for start := 0; start < len(keys); start += lookupBatch {
		end := min(start+lookupBatch, len(keys))
		if err := c.lookupBatch(keys[start:end], out[start:end]); err != nil {
			for i := start; i < len(keys); i++ {
				out[i] = snapshot.LookupUnknown
			}
			c.resetLocked()
			return opErr("lookup", err)
		}
	}
	return nil
}

func (c *Conn) lookupBatch(keys []snapshot.Key, out []snapshot.LookupResult) error {
	base := c.seq + 1
	c.req = c.req[:0]
	for i, k := range keys {
		c.seq++
		c.req = snapshot.AppendLookupRequest(c.req, c.seq, k, 0)
		out[i] = snapshot.LookupUnknown
		c.answered[i] = false
	}
	if err := c.send(); err != nil {
		return err
	}
	pending := len(keys)
	deadline := time.Now().Add(c.timeout)
	for pending > 0 {
		b, err := c.recv(deadline)
		if err != nil {
			return err
		}
		it := snapshot.NewMsgIter(b)
		for {
			h, payload, ok := it.Next()
			if !ok {
				break
			}
			i := h.Seq - base // wraps around with the sequence numbers
			if i >= uint32(len(keys)) || c.answered[i] {
				c.stats.Foreign++
				continue
			}
			res, err := snapshot.ParseLookupReply(h, payload)
			if err != nil && errors.Is(err, snapshot.ErrMalformed) {
				c.stats.Malformed++
				c.lastBad = err
			}
			out[i] = res
			c.answered[i] = true
			pending--
		}
		if err := it.Err(); err != nil {
			c.stats.Malformed++
			c.lastBad = err
		}
	}
	return nil
}

func (c *Conn) send() error {
	for {
		_, err := unix.Write(c.fd, c.req)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		return nil
	}
}

// recv returns the next datagram from the kernel. Datagrams from any other
// sender, and truncated ones, are counted and skipped.
func (c *Conn) recv(deadline time.Time) ([]byte, error) {
	for {
		c.fromLen = unix.SizeofSockaddrNetlink
		// A raw system call: it never blocks (MSG_DONTWAIT), and telling
		// the scheduler of each one cost 1-3 % more CPU per poll at 108k
		// sockets (bench/run.sh, 2026-12-07). The kernel builds the dump
		// within it, so the goroutine keeps its processor meanwhile: the
		// destroy readers run on the other one (GOMAXPROCS=1 would make
		// them wait for each datagram of a dump).
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(c.fd),
			uintptr(unsafe.Pointer(&c.buf[0])), uintptr(len(c.buf)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC,
			uintptr(unsafe.Pointer(&c.from)), uintptr(unsafe.Pointer(&c.fromLen)))
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if err := c.wait(deadline); err != nil {
				return nil, err
			}
			continue
		default:
			return nil, fmt.Errorf("recvfrom: %w", errno)
		}
		if int(n) > len(c.buf) {
			c.stats.Malformed++
			c.lastBad = fmt.Errorf("%w: datagram of %d bytes truncated to %d", snapshot.ErrMalformed, n, len(c.buf))
			continue
		}
		if c.from.Family != unix.AF_NETLINK || c.from.Pid != 0 {
			c.stats.Foreign++
			continue
		}
		return c.buf[:n], nil
	}
}

// wait blocks until the socket is readable or the deadline passes.
func (c *Conn) wait(deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("recvfrom: %w", unix.ETIMEDOUT)
		}
		c.pfd[0] = unix.PollFd{Fd: int32(c.fd), Events: unix.POLLIN}
		ms := int(left / time.Millisecond)
		if ms == 0 {
			ms = 1
		}
		n, err := unix.Poll(c.pfd[:], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// resetLocked replaces the socket after a failed request, so that the
// rest of an abandoned dump cannot be read as the next request's replies.
func (c *Conn) resetLocked() {
	fd, err := openSocket()
	if err != nil {
		return // keep the old one; the next request reports its own error
	}
	unix.Close(c.fd)
	c.fd = fd
}

// kernelErr turns an errno reported inside a netlink message into a
// unix.Errno, so callers can test it with errors.Is.
func kernelErr(err error) error {
	if err == nil {
		return nil // before errors.As, whose target would escape every poll
	}
	var ee *snapshot.ErrnoError
	if errors.As(err, &ee) {
		return fmt.Errorf("%s: %w", ee.Op, unix.Errno(ee.Code))
	}
	return err
}
