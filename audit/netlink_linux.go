//go:build linux

package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/internal/nlsock"
)

// Netlink message types of the audit control protocol (linux/audit.h).
const (
	msgGet       = 1000 // AUDIT_GET
	msgSet       = 1001 // AUDIT_SET
	msgAddRule   = 1011 // AUDIT_ADD_RULE
	msgDelRule   = 1012 // AUDIT_DEL_RULE
	msgListRules = 1013 // AUDIT_LIST_RULES

	groupReadlog = 1 // AUDIT_NLGRP_READLOG
)

const nlHdrLen = unix.SizeofNlMsghdr

// control is a NETLINK_AUDIT socket for requests: status, rules, the
// enabled flag. Every request needs CAP_AUDIT_CONTROL, and the kernel
// serves them only to the initial pid namespace.
type control struct {
	fd  int
	seq uint32
	buf []byte
}

func openControl() (*control, error) {
	fd, err := nlsock.Dial(unix.NETLINK_AUDIT)
	if err != nil {
		return nil, fmt.Errorf("audit control: %w", err)
	}
	// A reply that never comes (a kernel thread stuck) must not hang
	// start-up or shutdown.
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("audit control: SO_RCVTIMEO: %w", err)
	}
	return &control{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (c *control) close() error { return unix.Close(c.fd) }

// send writes one request. ack asks the kernel to confirm it.
func (c *control) send(typ uint16, payload []byte, ack bool) (uint32, error) {
	c.seq++
	msg := make([]byte, nlHdrLen+len(payload))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], typ)
	flags := uint16(unix.NLM_F_REQUEST)
	if ack {
		flags |= unix.NLM_F_ACK
	}
	ne.PutUint16(msg[6:], flags)
	ne.PutUint32(msg[8:], c.seq)
	copy(msg[nlHdrLen:], payload)
	if err := unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	return c.seq, nil
}

// receive reads replies to seq and hands each message to fn until fn
// says done, or an error message arrives (an ack is error 0).
func (c *control) receive(seq uint32, fn func(typ uint16, payload []byte) (done bool, err error)) error {
	for {
		n, from, err := unix.Recvfrom(c.fd, c.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("no reply: %w", os.ErrDeadlineExceeded)
			}
			return err
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not the kernel
		}
		b := c.buf[:n]
		for len(b) >= nlHdrLen {
			ne := binary.NativeEndian
			l := int(ne.Uint32(b[0:]))
			typ := ne.Uint16(b[4:])
			mseq := ne.Uint32(b[8:])
			if l < nlHdrLen || l > len(b) {
				return fmt.Errorf("%w: netlink message of %d bytes in %d", ErrMalformed, l, len(b))
			}
			payload := b[nlHdrLen:l]
			b = b[min(len(b), (l+3)&^3):]
			if mseq != seq {
				continue
			}
			switch typ {
			case unix.NLMSG_ERROR:
				if len(payload) < 4 {
					return fmt.Errorf("%w: short netlink error", ErrMalformed)
				}
				if e := int32(ne.Uint32(payload)); e != 0 {
					return unix.Errno(-e)
				}
				return nil
			case unix.NLMSG_DONE:
				return nil
			}
			done, err := fn(typ, payload)
			if err != nil || done {
				return err
			}
		}
	}
}

// status asks for the kernel's audit state.
func (c *control) status() (Status, error) {
	seq, err := c.send(msgGet, nil, false)
	if err != nil {
		return Status{}, fmt.Errorf("audit status: %w", err)
	}
	var st Status
	err = c.receive(seq, func(typ uint16, p []byte) (bool, error) {
		if typ != msgGet {
			return false, nil
		}
		var err error
		st, err = parseStatus(p)
		return true, err
	})
	if err != nil {
		return Status{}, fmt.Errorf("audit status: %w", err)
	}
	return st, nil
}

// setEnabled sets the enabled flag, and nothing else.
func (c *control) setEnabled(v uint32) error {
	seq, err := c.send(msgSet, encodeSetEnabled(v), true)
	if err == nil {
		err = c.receive(seq, func(uint16, []byte) (bool, error) { return false, nil })
	}
	if err != nil {
		return fmt.Errorf("audit set enabled=%d: %w", v, err)
	}
	return nil
}

// rules lists the rules of every filter, each as the kernel encodes it
// (which is also what deleting it takes).
func (c *control) rules() ([][]byte, error) {
	// No ack: the kernel sends the list from another thread, and the ack
	// could come first.
	seq, err := c.send(msgListRules, nil, false)
	if err != nil {
		return nil, fmt.Errorf("audit list rules: %w", err)
	}
	var out [][]byte
	err = c.receive(seq, func(typ uint16, p []byte) (bool, error) {
		if typ == msgListRules {
			out = append(out, append([]byte(nil), p...))
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit list rules: %w", err)
	}
	return out, nil
}

// ruleOp adds or deletes one rule.
func (c *control) ruleOp(typ uint16, data []byte) error {
	seq, err := c.send(typ, data, true)
	if err == nil {
		err = c.receive(seq, func(uint16, []byte) (bool, error) { return false, nil })
	}
	return err
}

// DefaultReadBuffer is the receive buffer asked for the read-log
// subscription: a burst of connects must fit while the reader catches up.
// A call is four records (SYSCALL, SOCKADDR, PROCTITLE, EOE), each
// counted at its allocation, about 2 KiB: 32 MiB hold some 4,000 calls,
// a second or more of a connect flood while the reader is held up (with
// 8 MiB, other processes' floods on a loaded machine overran it). The
// memory is the kernel's, taken only while records wait.
const DefaultReadBuffer = 32 << 20

// ErrOverrun reports that records were lost because the subscription's
// receive buffer was full (ENOBUFS).
var ErrOverrun = errors.New("audit read-log: receive buffer overrun, records lost")

// Reader is a subscription to the audit read-log multicast group, which
// receives every record the kernel emits, alongside auditd and without
// replacing it. It needs CAP_AUDIT_READ.
type Reader struct {
	sub     *nlsock.Subscription
	fd      int // sub.FD, read directly by Drain
	buf     []byte
	from    unix.RawSockaddrNetlink
	fromLen uint32
	// Buffer is the receive buffer size the kernel granted.
	Buffer int
	// Foreign counts datagrams not from the kernel.
	Foreign uint64
}

// OpenReader subscribes to the read-log group. bufSize is the receive
// buffer to ask for (0: DefaultReadBuffer).
func OpenReader(bufSize int) (*Reader, error) {
	if bufSize <= 0 {
		bufSize = DefaultReadBuffer
	}
	sub, err := nlsock.Subscribe(unix.NETLINK_AUDIT, 1<<(groupReadlog-1), bufSize, "audit-readlog")
	if err != nil {
		return nil, fmt.Errorf("audit read-log: %w", err)
	}
	return &Reader{sub: sub, fd: sub.FD, buf: make([]byte, 1<<16), Buffer: sub.Buffer}, nil
}

// WaitReadable blocks until a record (or an overrun) is queued, without
// taking it, so that one goroutine can wait while another reads. It
// returns a wrapped os.ErrClosed after Close.
func (r *Reader) WaitReadable() error {
	if err := r.sub.WaitReadable(); err != nil {
		return fmt.Errorf("audit read-log wait: %w", err)
	}
	return nil
}

// Drain hands each queued record to fn (its type and text), at most max
// of them, and returns how many it read. It returns ErrOverrun when the
// kernel dropped records since the last call; the records read are
// handed over all the same.
func (r *Reader) Drain(max int, fn func(typ uint16, text []byte)) (int, error) {
	n := 0
	var rerr error
	for n < max {
		r.fromLen = unix.SizeofSockaddrNetlink
		got, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(r.fd),
			uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC,
			uintptr(unsafe.Pointer(&r.from)), uintptr(unsafe.Pointer(&r.fromLen)))
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
		if r.from.Pid != 0 {
			r.Foreign++
			continue
		}
		b := r.buf[:min(int(got), len(r.buf))]
		if len(b) < nlHdrLen {
			continue
		}
		// One record per datagram. nlmsg_len is not trusted: the kernel
		// has sent it both with and without the header counted.
		typ := binary.NativeEndian.Uint16(b[4:])
		n++
		fn(typ, b[nlHdrLen:])
	}
	switch {
	case rerr == unix.ENOBUFS:
		return n, ErrOverrun
	case rerr != nil:
		return n, fmt.Errorf("audit read-log: recvfrom: %w", rerr)
	}
	return n, nil
}

// Close ends the subscription; a blocked WaitReadable returns.
func (r *Reader) Close() error {
	if err := r.sub.Close(); err != nil {
		return fmt.Errorf("audit read-log close: %w", err)
	}
	return nil
}
