//go:build linux

package diag

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/internal/nlsock"
	"github.com/connlogd/connlogd/snapshot"
)

// DefaultDestroyBuffer is the receive buffer asked for the destroy
// subscription: a burst of closes must fit while the reader catches up.
const DefaultDestroyBuffer = 8 << 20

// ErrOverrun reports that the kernel dropped destroy notifications because
// the receive buffer was full (ENOBUFS): closes in that window may be
// missing, so the caller must report a gap and resynchronise.
var ErrOverrun = errors.New("sock_diag destroy: receive buffer overrun, notifications lost")

// Destroy is a subscription to the kernel's socket-destroy notifications
// (the SKNLGRP_INET*_DESTROY multicast groups of NETLINK_SOCK_DIAG).
type Destroy struct {
	sub *nlsock.Subscription // read directly by Drain
	fd  int                  // sub.FD
	// One recvmmsg reads up to mmsgSlots datagrams (one notification
	// each) into slots of buf.
	buf     []byte
	msgs    [mmsgSlots]unix.Mmsghdr
	iovs    [mmsgSlots]unix.Iovec
	froms   [mmsgSlots]unix.RawSockaddrNetlink
	mu      sync.Mutex
	stats   snapshot.Stats
	lastBad error
	// Buffer is the receive buffer size the kernel granted.
	Buffer int
	// Forced says whether SO_RCVBUFFORCE (CAP_NET_ADMIN) set it past
	// net.core.rmem_max.
	Forced bool
}

// OpenDestroy subscribes to the destroy groups of the given families and
// protocols. bufSize is the receive buffer to ask for (0: the default).
func OpenDestroy(protos []snapshot.Proto, fams []snapshot.Family, bufSize int) (*Destroy, error) {
	if bufSize <= 0 {
		bufSize = DefaultDestroyBuffer
	}
	var groups uint32
	for _, p := range protos {
		for _, f := range fams {
			if g := destroyGroup(p, f); g != 0 {
				groups |= 1 << (g - 1)
			}
		}
	}
	if groups == 0 {
		return nil, opErr("subscribe", errors.New("no protocol and family to watch"))
	}
	sub, err := nlsock.Subscribe(unix.NETLINK_SOCK_DIAG, groups, bufSize, "sock_diag-destroy")
	if err != nil {
		return nil, opErr("subscribe", err)
	}
	d := &Destroy{sub: sub, fd: sub.FD, Buffer: sub.Buffer, Forced: sub.Forced, buf: make([]byte, mmsgSlots*mmsgSlotLen)}
	for i := range d.msgs {
		d.iovs[i].Base = &d.buf[i*mmsgSlotLen]
		d.iovs[i].SetLen(mmsgSlotLen)
		d.msgs[i].Hdr.Iov = &d.iovs[i]
		d.msgs[i].Hdr.SetIovlen(1)
		d.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&d.froms[i]))
	}
	return d, nil
}

func destroyGroup(p snapshot.Proto, f snapshot.Family) int {
	switch {
	case p == snapshot.ProtoTCP && f == snapshot.FamilyIPv4:
		return snapshot.GroupTCP4Destroy
	case p == snapshot.ProtoUDP && f == snapshot.FamilyIPv4:
		return snapshot.GroupUDP4Destroy
	case p == snapshot.ProtoTCP && f == snapshot.FamilyIPv6:
		return snapshot.GroupTCP6Destroy
	case p == snapshot.ProtoUDP && f == snapshot.FamilyIPv6:
		return snapshot.GroupUDP6Destroy
	}
	return 0
}

// protoOfGroups returns the protocol of the destroy group a datagram was
// multicast to; the message itself does not say TCP or UDP.
func protoOfGroups(mask uint32) (snapshot.Proto, bool) {
	switch mask {
	case 1 << (snapshot.GroupTCP4Destroy - 1), 1 << (snapshot.GroupTCP6Destroy - 1):
		return snapshot.ProtoTCP, true
	case 1 << (snapshot.GroupUDP4Destroy - 1), 1 << (snapshot.GroupUDP6Destroy - 1):
		return snapshot.ProtoUDP, true
	}
	return 0, false
}

// maxBatch bounds the sockets one Read returns, so a flood of closes is
// handed over in slices while the next ones queue in the kernel.
const maxBatch = 1024

// Drain appends to t (which it does not reset) the destroyed sockets of
// the notifications queued now, up to maxBatch, and returns at once. full
// says t reached maxBatch, so more may be queued: callers that must see
// every notification queued before some moment (the end of a dump) drain
// until full is false. It returns ErrOverrun, possibly with sockets in t,
// when the kernel dropped notifications. One goroutine drains, and may
// close; another may wait in WaitReadable meanwhile.
func (d *Destroy) Drain(t *snapshot.Table) (full bool, err error) {
	err = d.read(t)
	return t.Len() >= maxBatch, err
}

// WaitReadable blocks until a notification (or an overrun) is queued,
// without taking it, so that one goroutine can wait while another owns
// the reads. It returns a wrapped os.ErrClosed after Close.
func (d *Destroy) WaitReadable() error {
	return opErr("destroy wait", d.sub.WaitReadable())
}

// mmsgSlots is how many datagrams one recvmmsg reads: the kernel sends
// each notification alone, and one system call per socket was most of
// the cost of reading them at thousands of closes a second.
const mmsgSlots = 32

// mmsgSlotLen holds one notification: a socket's diag message with its
// tcp_info and the other attributes a destroy carries is well under 1 KiB;
// a longer one is counted malformed (MSG_TRUNC), not misread.
const mmsgSlotLen = 4096

// read reads the non-blocking socket directly: it is in no poller of the
// runtime's (WaitReadable waits through an epoll instance of its own), and
// a waiter may be waiting meanwhile.
func (d *Destroy) read(t *snapshot.Table) error {
	var rerr error
	for t.Len() < maxBatch {
		for i := range d.msgs {
			d.msgs[i].Hdr.Namelen = unix.SizeofSockaddrNetlink
			d.msgs[i].Hdr.Flags = 0
			d.msgs[i].Len = 0
		}
		// An error after some datagrams were read is kept by the kernel
		// for the next call, which this loop makes: it stops only at
		// EAGAIN, an error, or a full batch.
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(d.fd),
			uintptr(unsafe.Pointer(&d.msgs[0])), mmsgSlots,
			unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno == unix.EAGAIN {
			break
		}
		if errno != 0 {
			rerr = errno
			break
		}
		for i := range int(n) {
			d.datagram(i, t)
		}
	}
	switch {
	case rerr == unix.ENOBUFS:
		return ErrOverrun
	case rerr != nil:
		return opErr("destroy read", fmt.Errorf("recvmmsg: %w", rerr))
	}
	return nil
}

// datagram checks the sender of slot i's datagram and parses it into t.
func (d *Destroy) datagram(i int, t *snapshot.Table) {
	m, from := &d.msgs[i], &d.froms[i]
	n := int(m.Len)
	if n > mmsgSlotLen || m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		d.count(func(s *snapshot.Stats) { s.Malformed++ },
			fmt.Errorf("%w: destroy datagram of %d bytes truncated", snapshot.ErrMalformed, n))
		return
	}
	if m.Hdr.Namelen < unix.SizeofSockaddrNetlink || from.Family != unix.AF_NETLINK || from.Pid != 0 {
		d.count(func(s *snapshot.Stats) { s.Foreign++ }, nil)
		return
	}
	proto, ok := protoOfGroups(from.Groups)
	if !ok {
		d.count(func(s *snapshot.Stats) { s.Foreign++ }, nil)
		return
	}
	d.parse(d.buf[i*mmsgSlotLen:i*mmsgSlotLen+n], proto, t)
}

func (d *Destroy) parse(b []byte, proto snapshot.Proto, t *snapshot.Table) {
	it := snapshot.NewMsgIter(b)
	for {
		h, payload, ok := it.Next()
		if !ok {
			break
		}
		if h.Type != snapshot.SockDiagByFam {
			d.count(func(s *snapshot.Stats) { s.Malformed++ }, fmt.Errorf("%w: destroy message of type %d", snapshot.ErrMalformed, h.Type))
			continue
		}
		s := t.Append()
		if err := snapshot.ParseDiagMsg(payload, proto, s); err != nil {
			t.DropLast()
			d.count(func(s *snapshot.Stats) { s.Malformed++ }, err)
		}
	}
	if err := it.Err(); err != nil {
		d.count(func(s *snapshot.Stats) { s.Malformed++ }, err)
	}
}

func (d *Destroy) count(f func(*snapshot.Stats), err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(&d.stats)
	if err != nil {
		d.lastBad = err
	}
}

// Stats returns the cumulative counts of refused messages.
func (d *Destroy) Stats() snapshot.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// LastMalformed returns the most recent parse error.
func (d *Destroy) LastMalformed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastBad
}

// Close ends the subscription; a blocked WaitReadable returns. It is idempotent.
func (d *Destroy) Close() error {
	err := d.sub.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
