//go:build linux

// Package nlsock opens the raw netlink sockets connlogd talks to the
// kernel on, with golang.org/x/sys/unix and nothing more: a request
// socket (Dial) for dumps and control messages, and a multicast
// subscription (Subscribe) for what the kernel announces (socket
// destroys, audit records). It owns what both kinds must get right once:
// a socket connected to the kernel, so that no other process can inject
// unicasts; a receive buffer as large as asked where the privilege
// allows; and a wait for data that leaves the reads to their owner.
//
// Reading and parsing stay with the packages that know the messages
// (diag, audit). Like every library package, it never logs: errors name
// the step that failed, and the caller adds what it was doing.
package nlsock

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernel returns the kernel's netlink address: a new one each time, as
// unix.Connect writes into the address it is given.
func kernel() *unix.SockaddrNetlink { return &unix.SockaddrNetlink{Family: unix.AF_NETLINK} }

// Dial opens a blocking NETLINK_* socket of protocol proto (for example
// unix.NETLINK_SOCK_DIAG) connected to the kernel: it binds an address of
// its own, and the kernel refuses unicasts to it from anyone else.
func Dial(proto int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, kernel()); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	return fd, nil
}

// Subscription is a non-blocking netlink socket subscribed to multicast
// groups. One goroutine may block in WaitReadable while another reads FD
// directly (recvfrom or recvmmsg with MSG_DONTWAIT), not through the
// runtime's poller, whose read side the waiter holds.
type Subscription struct {
	// FD is the socket, for the reader's system calls. Close closes it.
	FD int
	// Buffer is the receive buffer size the kernel granted.
	Buffer int
	// Forced says whether SO_RCVBUFFORCE (CAP_NET_ADMIN) set it past
	// net.core.rmem_max.
	Forced bool

	f       *os.File
	rc      syscall.RawConn
	overrun atomic.Bool
	closed  atomic.Bool
}

// Subscribe opens a NETLINK_* socket of protocol proto subscribed to
// groups (a mask: group g is bit g-1), with a receive buffer of bufSize
// bytes: a burst must fit while the reader catches up. Past rmem_max
// only with CAP_NET_ADMIN; without it, what rmem_max allows (Buffer
// says what was granted). The socket is connected to the kernel, so
// unicasts from other processes are refused; multicasts still arrive,
// and the reader checks the sender of each datagram. name names the
// descriptor (in /proc/self/fd and errors of the os package).
func Subscribe(proto int, groups uint32, bufSize int, name string) (*Subscription, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	s := &Subscription{FD: fd}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufSize); err == nil {
		s.Forced = true
	} else if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bufSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("SO_RCVBUF: %w", err)
	}
	if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil {
		s.Buffer = got
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind groups %#x: %w", groups, err)
	}
	if err := unix.Connect(fd, kernel()); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect: %w", err)
	}
	s.f = os.NewFile(uintptr(fd), name)
	if s.rc, err = s.f.SyscallConn(); err != nil {
		s.f.Close()
		return nil, err
	}
	return s, nil
}

// WaitReadable blocks until a datagram (or an error such as an overrun)
// is queued, without taking it. It returns os.ErrClosed once Close is
// called.
func (s *Subscription) WaitReadable() error {
	var peek [1]byte
	err := s.rc.Read(func(fd uintptr) bool {
		_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&peek[0])), 1,
			unix.MSG_DONTWAIT|unix.MSG_PEEK, 0, 0)
		switch errno {
		case unix.EAGAIN, unix.EINTR:
			return false
		case unix.ENOBUFS:
			// Reading the error cleared it: keep it for the reader.
			s.overrun.Store(true)
		}
		return true
	})
	if err != nil && s.closed.Load() {
		return os.ErrClosed // the poller says "use of closed file"
	}
	return err
}

// TakeOverrun reports, once, that WaitReadable met an overrun (ENOBUFS:
// the kernel dropped messages because the receive buffer was full),
// which the reader's own next read will then not see.
func (s *Subscription) TakeOverrun() bool { return s.overrun.Swap(false) }

// Close closes the socket; a blocked WaitReadable returns. Closing again
// returns an error wrapping os.ErrClosed.
func (s *Subscription) Close() error {
	s.closed.Store(true)
	return s.f.Close()
}
