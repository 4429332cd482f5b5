package sink

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Transport defaults.
const (
	// sendTimeout bounds one send, dial included: a stuck receiver costs
	// the poll loop at most this much per event.
	sendTimeout = 2 * time.Second
	minBackoff  = 100 * time.Millisecond
	maxBackoff  = 30 * time.Second
)

// framing is how messages are delimited on a connection.
type framing uint8

const (
	// frameDatagram: one message per datagram (udp, unixgram).
	frameDatagram framing = iota
	// frameOctet: RFC 6587 octet counting, "LEN SP MSG" (tcp). Unlike
	// newline framing it cannot be broken by the message's content.
	frameOctet
	// frameLF: newline-terminated, for unix stream sockets (what
	// syslog-ng's unix-stream() and Go's log/syslog use). Our messages
	// are JSON, which escapes newlines, so this is safe.
	frameLF
)

// transport delivers syslog messages to one address, one message per
// send. It owns the connection: it dials lazily, closes on any error,
// redials on the next send and backs off while the receiver stays away.
// It does no queueing; a bounded queue (and TLS, as another dial) can be
// put in front of send without changing it.
type transport struct {
	network string // unix | udp | tcp
	address string

	timeout, minBackoff, maxBackoff time.Duration

	conn    net.Conn
	framing framing
	fails   int       // consecutive failed sends
	retryAt time.Time // no dial before this
	lastErr error
	frame   []byte
}

func newTransport(network, address string) *transport {
	return &transport{
		network:    network,
		address:    address,
		timeout:    sendTimeout,
		minBackoff: minBackoff,
		maxBackoff: maxBackoff,
	}
}

// send delivers msg or returns why not; either way it returns within the
// timeout. It retries at most once: when an idle stream connection turns
// out to be closed by the receiver before anything is written.
func (t *transport) send(msg []byte) error {
	now := time.Now()
	deadline := now.Add(t.timeout)
	if t.conn != nil && t.framing != frameDatagram && peerClosed(t.conn) {
		// The receiver closed the idle connection (say, it restarted).
		// A write would still succeed into the dead socket and the
		// message would be lost silently, so redial now instead.
		t.close()
	}
	if t.conn == nil {
		if now.Before(t.retryAt) {
			return fmt.Errorf("not connected, next attempt in %v: %w", t.retryAt.Sub(now).Round(time.Millisecond), t.lastErr)
		}
		if err := t.dial(deadline); err != nil {
			return t.fail(now, fmt.Errorf("dial: %w", bare(err)))
		}
	}
	if err := t.conn.SetWriteDeadline(deadline); err != nil {
		t.close()
		return t.fail(now, fmt.Errorf("set deadline: %w", bare(err)))
	}
	if _, err := t.conn.Write(t.framed(msg)); err != nil {
		// After a partial write the stream's framing is lost: start over.
		t.close()
		return t.fail(now, fmt.Errorf("write: %w", bare(err)))
	}
	t.fails = 0
	return nil
}

// fail records a failed send. The first failure after a success redials
// at the next send, so a receiver restart costs one message; repeated
// failures back off, so a dead receiver does not cost a dial timeout per
// event.
func (t *transport) fail(now time.Time, err error) error {
	t.fails++
	t.lastErr = err
	if t.fails > 1 {
		d := t.maxBackoff
		if shift := t.fails - 2; shift < 20 {
			d = min(t.minBackoff<<shift, t.maxBackoff)
		}
		t.retryAt = now.Add(d)
	}
	return err
}

func (t *transport) dial(deadline time.Time) error {
	d := net.Dialer{Deadline: deadline}
	switch t.network {
	case "unix":
		// /dev/log is a datagram socket on systemd and rsyslog systems; a
		// stream socket answers the datagram dial with EPROTOTYPE.
		c, err := d.Dial("unixgram", t.address)
		if errors.Is(err, syscall.EPROTOTYPE) {
			c, err = d.Dial("unix", t.address)
			t.set(c, frameLF)
			return err
		}
		t.set(c, frameDatagram)
		return err
	case "udp":
		c, err := d.Dial("udp", t.address)
		t.set(c, frameDatagram)
		return err
	case "tcp":
		c, err := d.Dial("tcp", t.address)
		t.set(c, frameOctet)
		return err
	}
	return fmt.Errorf("unknown network %q", t.network)
}

func (t *transport) set(c net.Conn, f framing) {
	if c != nil {
		t.conn, t.framing = c, f
	}
}

func (t *transport) framed(msg []byte) []byte {
	switch t.framing {
	case frameOctet:
		t.frame = strconv.AppendInt(t.frame[:0], int64(len(msg)), 10)
		t.frame = append(t.frame, ' ')
		return append(t.frame, msg...)
	case frameLF:
		t.frame = append(append(t.frame[:0], msg...), '\n')
		return t.frame
	}
	return msg
}

// close drops the connection; the next send dials again.
func (t *transport) close() error {
	if t.conn == nil {
		return nil
	}
	err := t.conn.Close()
	t.conn = nil
	return err
}

// peerClosed peeks at a stream connection without blocking. A syslog
// receiver never sends, so end-of-file or an error means it has closed
// the connection. rsyslog's omfwd checks its TCP connections the same way.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	rerr := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
		case err != nil, n == 0:
			closed = true
		}
		return true // never wait for readability
	})
	return closed || rerr != nil
}
