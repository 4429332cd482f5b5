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
	"sync"
	"sync/atomic"
	"syscall"

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
// with MSG_DONTWAIT (recvfrom or recvmmsg); the reader stops reading
// before it calls Close, which closes FD.
//
// The socket is not in the runtime's poller itself but in an epoll
// instance of its own, armed one-shot (EPOLLONESHOT), which is. The
// runtime registers descriptors edge-triggered, and every datagram
// queued is an edge: a socket in its poller can wake the thread asleep
// there for each one, also while nobody waits for it (the destroy
// waiter lets notifications gather before it reads them). At 40,000
// notifications a second that was 8,200 wake-ups a second for nothing,
// about a sixth of the daemon's CPU. Armed one-shot, the socket reports
// once and then stays silent until WaitReadable arms it again.
type Subscription struct {
	// FD is the socket, for the reader's system calls. Close closes it.
	FD int
	// Buffer is the receive buffer size the kernel granted.
	Buffer int
	// Forced says whether SO_RCVBUFFORCE (CAP_NET_ADMIN) set it past
	// net.core.rmem_max.
	Forced bool

	ep  *os.File // the epoll instance watching FD, in the runtime's poller
	rc  syscall.RawConn
	arm unix.EpollEvent
	// wait makes waits one at a time: a second waiter's arming would be
	// taken by the first one's report, and it would sleep on with data
	// queued.
	wait   sync.Mutex
	events [1]unix.EpollEvent
	closed atomic.Bool
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
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	s.arm = unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &s.arm); err != nil {
		unix.Close(ep)
		unix.Close(fd)
		return nil, fmt.Errorf("epoll_ctl add: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		unix.Close(fd)
		return nil, fmt.Errorf("epoll nonblock: %w", err)
	}
	s.ep = os.NewFile(uintptr(ep), name)
	if s.rc, err = s.ep.SyscallConn(); err != nil {
		s.ep.Close()
		unix.Close(fd)
		return nil, fmt.Errorf("epoll conn: %w", err)
	}
	return s, nil
}

// WaitReadable blocks until a datagram (or an error such as an overrun)
// is queued, without taking it. It returns os.ErrClosed once Close is
// called. It arms the socket for one report and waits for it; what is
// queued already is reported at once. Waits are one at a time.
func (s *Subscription) WaitReadable() error {
	s.wait.Lock()
	defer s.wait.Unlock()
	var cerr error
	err := s.rc.Control(func(ep uintptr) {
		cerr = unix.EpollCtl(int(ep), unix.EPOLL_CTL_MOD, s.FD, &s.arm)
	})
	if err == nil && cerr != nil {
		err = fmt.Errorf("epoll_ctl mod: %w", cerr)
	}
	if err == nil {
		var werr error
		err = s.rc.Read(func(ep uintptr) bool {
			for {
				// Taking the report disarms the socket. An error stays
				// queued on the socket (the epoll report does not clear
				// it) for the reader's next read: an overrun's ENOBUFS
				// is seen there.
				n, err := unix.EpollWait(int(ep), s.events[:], 0)
				if err == unix.EINTR {
					continue
				}
				werr = err
				return n > 0 || err != nil
			}
		})
		if err == nil && werr != nil {
			err = fmt.Errorf("epoll_wait: %w", werr)
		}
	}
	if err != nil && s.closed.Load() {
		return os.ErrClosed // the poller says "use of closed file"
	}
	return err
}

// Close closes the socket; a blocked WaitReadable returns, and FD is
// closed once it has. Readers of FD are the caller's to stop first.
// Closing again returns an error wrapping os.ErrClosed.
func (s *Subscription) Close() error {
	if s.closed.Swap(true) {
		return fmt.Errorf("close subscription: %w", os.ErrClosed)
	}
	err := s.ep.Close()
	if cerr := unix.Close(s.FD); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}
