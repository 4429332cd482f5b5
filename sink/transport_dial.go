package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func (t *transport) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: t.timeout}
	var c net.Conn
	var err error
	f := frameOctet
	switch t.network {
	case "unix":
		// /dev/log is a datagram socket on systemd and rsyslog systems; a
		// stream socket answers the datagram dial with EPROTOTYPE.
		c, err = d.DialContext(ctx, "unixgram", t.address)
		f = frameDatagram
		if errors.Is(err, syscall.EPROTOTYPE) {
			c, err = d.DialContext(ctx, "unix", t.address)
			f = frameLF
		}
	case "udp":
		c, err = d.DialContext(ctx, "udp", t.address)
		f = frameDatagram
	case "tcp":
		c, err = d.DialContext(ctx, "tcp", t.address)
		if err == nil {
			cc := &countingConn{Conn: c}
			t.use(ctx, cc, c, frameOctet)
			t.counted = cc
			return nil
		}
	case "tls":
		tc, raw, cc, err := t.dialTLS(ctx, &d)
		if err != nil {
			return err
		}
		t.use(ctx, tc, raw, frameOctet)
		t.counted = cc
		return nil
	case "relp", "relp-tls":
		raw, err := d.DialContext(ctx, "tcp", t.address)
		c := raw
		if err == nil && t.network == "relp-tls" {
			c, raw, _, err = t.dialTLSOn(ctx, raw)
		}
		if err != nil {
			return err
		}
		if err = t.relpOpen(c); err != nil {
			raw.Close()
			return err
		}
		t.use(ctx, c, raw, frameRELP)
		return nil
	default:
		return fmt.Errorf("unknown network %q", t.network)
	}
	if err != nil {
		return err
	}
	t.use(ctx, c, c, f)
	return nil
}

// dialTLS dials the address and makes the TLS handshake; cc counts the
// bytes written to the TCP connection raw.
func (t *transport) dialTLS(ctx context.Context, d *net.Dialer) (tc *tls.Conn, raw net.Conn, cc *countingConn, err error) {
	raw, err = d.DialContext(ctx, "tcp", t.address)
	if err != nil {
		return nil, nil, nil, err
	}
	start := time.Now()
	if tc, raw, cc, err = t.dialTLSOn(ctx, raw); err != nil {
		return nil, nil, nil, err
	}
	if err := acceptedAfterHandshake(tc, time.Since(start), t.timeout); err != nil {
		raw.Close()
		return nil, nil, nil, err
	}
	return tc, raw, cc, nil
}

// acceptedAfterHandshake waits, on a TLS 1.3 connection, for the
// receiver to refuse the session. In TLS 1.3 the client's handshake ends
// before the server has checked the client's certificate: a receiver
// that requires one (mutual TLS) and refuses ours, or its absence,
// answers with an alert a round trip later. Events written before then
// are acknowledged by the receiver's kernel and then discarded by it, so
// the acknowledged byte count would call them delivered: every event
// would be lost while the sink counted none. The receiver of a syslog
// stream sends nothing else (session tickets are consumed by Read), so
// a read that times out means it accepted; an alert means it refused.
// The wait is twice the handshake (two round trips and the receiver's
// own checks), at least 200 ms, at most the sink's timeout: paid once a
// connection, while events stay queued. RELP needs none of this: its
// open command is answered.
func acceptedAfterHandshake(tc *tls.Conn, handshake, limit time.Duration) error {
	if tc.ConnectionState().Version < tls.VersionTLS13 {
		return nil // TLS 1.2: the server's Finished came after its checks
	}
	wait := min(max(2*handshake, 200*time.Millisecond), limit)
	if err := tc.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	var b [1]byte
	_, err := tc.Read(b[:])
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		// A read deadline leaves a tls.Conn usable.
		if err := tc.SetReadDeadline(time.Time{}); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("tls: the receiver refused the session after the handshake: %w", err)
	default:
		return errors.New("tls: the receiver sent data on a syslog stream, which it never does")
	}
}

// dialTLSOn makes the TLS handshake on a new TCP connection; it closes
// raw when the handshake fails.
func (t *transport) dialTLSOn(ctx context.Context, raw net.Conn) (*tls.Conn, net.Conn, *countingConn, error) {
	cc := &countingConn{Conn: raw}
	conf := t.tlsConf().Clone()
	// Full-size records from the first write: a record is then a whole
	// chunk, so an acknowledged byte count tells which chunks arrived.
	conf.DynamicRecordSizingDisabled = true
	tc := tls.Client(cc, conf)
	hctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, nil, nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, raw, cc, nil
}

// use adopts a new connection. For streams a goroutine reads it: a
// receiver never sends (beyond TLS session tickets, which tls.Conn.Read
// consumes), so the read returns only when the receiver closes the
// connection or it fails, and the sender learns of it before its next
// write instead of writing into a dead socket. The abort hook unblocks a
// write when the drain time at shutdown is up.
func (t *transport) use(ctx context.Context, c, raw net.Conn, f framing) {
	t.conn, t.raw, t.framing = c, raw, f
	t.probe = newTCPProbe(raw)
	t.stopAbort = context.AfterFunc(ctx, func() {
		raw.SetDeadline(time.Unix(1, 0))
	})
	if f == frameDatagram {
		t.gone, t.readerDone = nil, nil
		return
	}
	gone, done := make(chan struct{}), make(chan struct{})
	t.gone, t.readerDone = gone, done
	if f == frameRELP {
		t.ackSig = make(chan struct{}, 1)
		go t.relpRead(t.br, gone, done, t.ackSig)
		return
	}
	go func() {
		defer close(done)
		var buf [512]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				close(gone)
				return
			}
		}
	}()
}

func (t *transport) peerGone() bool {
	if t.gone == nil {
		return false
	}
	select {
	case <-t.gone:
		return true
	default:
		return false
	}
}

// peerClosed asks the kernel whether the receiver has closed the stream
// connection, without waiting: it sees a FIN that the reader goroutine
// may not have been scheduled to notice yet. For TCP (TLS included) the
// connection's state says it; for a unix stream, a receiver never sends,
// so end-of-file or an error at a peek means it is gone.
func (t *transport) peerClosed() bool {
	if t.probe != nil {
		info, ok := t.probe.get()
		return !ok || info.State != tcpEstablished
	}
	sc, ok := t.raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	cerr := rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = (err != nil && err != unix.EAGAIN && err != unix.EINTR) || (err == nil && n == 0)
	})
	return closed || cerr != nil
}

// drop closes the connection; the next send dials again. graceful sends
// TLS's close_notify first, which a dead connection could not take.
func (t *transport) drop(graceful bool) error {
	if t.conn == nil {
		return nil
	}
	relp := t.framing == frameRELP
	if relp && graceful {
		// The answers still due say what the receiver holds.
		if t.relpWait(t.relpSeq.Load()) != nil {
			graceful = false
		} else {
			t.relpClose()
		}
	}
	if relp && !graceful {
		t.relpLinger()
	}
	if t.tracked() && !graceful && !relp {
		// While the socket is open: tcp_info says what was acknowledged.
		// A graceful close lets the kernel deliver what is in flight.
		t.reclaim()
	}
	t.stopAbort()
	var err error
	if graceful {
		err = t.conn.Close()
	} else {
		err = t.raw.Close()
	}
	if t.readerDone != nil {
		<-t.readerDone
	}
	if relp && !graceful {
		t.reclaim() // once the reader has taken every answer that came
	}
	// Reclaimed, or delivered by the graceful close.
	if n := len(t.spans); n > 0 && t.acked != nil {
		t.acked(n)
	}
	t.unacked, t.spans = t.unacked[:0], t.spans[:0]
	t.conn, t.raw, t.gone, t.readerDone, t.counted, t.br, t.probe = nil, nil, nil, nil, nil, nil, nil
	return err
}
