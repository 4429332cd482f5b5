package sink

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tcpProbe reads a TCP connection's tcp_info into a buffer of its own:
// the sender asks before every write, and x/sys's GetsockoptTCPInfo and
// a closure per call would allocate each time.
type tcpProbe struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) // bound once
	info unix.TCPInfo
	err  syscall.Errno
}

func newTCPProbe(c net.Conn) *tcpProbe {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &tcpProbe{rc: rc}
	p.fn = p.read
	return p
}

func (p *tcpProbe) read(fd uintptr) {
	size := uint32(unsafe.Sizeof(p.info))
	_, _, p.err = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&p.info)), uintptr(unsafe.Pointer(&size)), 0)
}

// get returns the connection's tcp_info, valid until the next call.
func (p *tcpProbe) get() (*unix.TCPInfo, bool) {
	if p == nil {
		return nil, false
	}
	if err := p.rc.Control(p.fn); err != nil || p.err != 0 {
		return nil, false
	}
	return &p.info, true
}

// tcpEstablished is TCP_ESTABLISHED in tcp_info's state.
const tcpEstablished = 1
