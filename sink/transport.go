package sink

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Transport defaults.
const (
	// writeTimeout bounds one write (and a dial with its TLS handshake):
	// a receiver that stops reading is given up on after this, the
	// connection dropped and redialed. It delays only the sender
	// goroutine, never the poll loop.
	writeTimeout = 10 * time.Second
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 30 * time.Second
	// chunkSize is the most a stream write carries: large enough that a
	// backlog goes out in few system calls and full TLS records, small
	// enough that a failure leaves little in doubt.
	chunkSize = 64 << 10
	// tlsRecord is the most a TLS chunk carries: one record's plaintext
	// (16 KiB), so that an acknowledged byte count tells which chunks
	// the receiver can read.
	tlsRecord = 16 << 10
)

// framing is how messages are delimited on a connection.
type framing uint8

const (
	// frameDatagram: one message per datagram (udp, unixgram).
	frameDatagram framing = iota
	// frameOctet: octet counting, "LEN SP MSG" (tcp, tls; RFC 6587 3.4.1,
	// RFC 5425 4.3). Unlike newline framing, content cannot break it.
	frameOctet
	// frameLF: newline-terminated, for unix stream sockets (what
	// syslog-ng's unix-stream() and Go's log/syslog use). Our messages
	// are JSON, which escapes newlines, so this is safe.
	frameLF
	// frameRELP: RELP syslog frames (relp), each answered by the
	// receiver.
	frameRELP
)

// errMsgSize marks a message the transport can never deliver (a datagram
// over the size limit): the sender drops it instead of retrying forever.
var errMsgSize = errors.New("message too long for a datagram")

// transport delivers syslog messages to one address. It belongs to its
// sink's sender goroutine: it dials lazily, drops the connection on any
// error or when the receiver closes it, and backs off exponentially
// (capped, with jitter) while the receiver stays away.
//
// It is written by hand rather than taken from a library: log/syslog is
// frozen and speaks neither RFC 5424 nor octet counting nor TLS, and the
// third-party writers are unmaintained or block the caller.
type transport struct {
	network string // unix | udp | tcp | tls | relp | relp-tls
	address string
	tlsConf func() *tls.Config // current TLS settings (Reopen reloads them)

	timeout, minBackoff, maxBackoff time.Duration

	conn    net.Conn
	raw     net.Conn // the TCP connection under TLS; conn otherwise
	framing framing
	// gone is closed by the reader goroutine of a stream connection when
	// the receiver closes it or it fails; readerDone when that goroutine
	// has returned.
	gone, readerDone chan struct{}
	stopAbort        func() bool

	fails int // consecutive failures
	// progress: the receiver acknowledged something since the last send.
	progress bool
	frame    []byte
	cuts     []int    // end offset of each message in frame
	msgs     []int    // start offset of each message's MSG in frame
	seqs     []uint64 // RELP: each message's transaction

	// Stream connections keep what they wrote until the receiver's
	// kernel acknowledges it (tcp_info's bytes_acked against the bytes
	// written to the TCP socket, TLS records included). When the
	// connection dies, what was never acknowledged never reached the
	// receiver: it is reclaimed and written first on the next
	// connection, instead of being counted as delivered and lost.
	//
	// Over RELP the receiver answers each message once it holds it in
	// its queue, which closes the window TCP leaves (acknowledged by the
	// receiver's kernel, never read by the receiver): the same
	// bookkeeping then counts transactions instead of bytes.
	counted  *countingConn
	probe    *tcpProbe   // tcp_info of raw, when it is TCP
	unacked  []byte      // framed messages written, not yet acknowledged
	spans    []sentSpan  // one per message
	resend   batch       // reclaimed messages, unframed, for the next connection
	spare    batch       // scratch for reclaim
	reclaims func(n int) // tells the sink that n written messages came back
	// refusals tells the sink that the receiver refused n written
	// messages (RELP), err the last refusal.
	refusals func(n int, err error)

	// RELP: relpSeq is the connection's last command (open is 1) and
	// relpAcked the last one answered, set by the reader goroutine, which
	// signals ackSig; goneErr says why the reader stopped (read only
	// after gone is closed).
	relpSeq   atomic.Uint64
	relpAcked atomic.Uint64
	ackSig    chan struct{}
	ackTimer  *time.Timer
	br        *bufio.Reader
	goneErr   error
	refMu     sync.Mutex
	refused   []uint64 // refused transactions, not yet taken by trimAcked
	refErr    error
}

// sentSpan is one message in unacked: bytes [off, end) are its frame,
// [msgOff, end-trailer) the message; rawEnd is the stream offset of its
// last byte (TCP), of its TLS record's end, or its RELP transaction.
type sentSpan struct {
	off, end       int
	msgOff, msgEnd int
	rawEnd         uint64
}

// countingConn counts the bytes written to a TCP connection.
type countingConn struct {
	net.Conn
	n uint64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n += uint64(n)
	return n, err
}

func newTransport(network, address string, tlsConf func() *tls.Config) *transport {
	return &transport{
		network:    network,
		address:    address,
		tlsConf:    tlsConf,
		timeout:    writeTimeout,
		minBackoff: minBackoff,
		maxBackoff: maxBackoff,
	}
}

// send delivers messages b[from:] in order and returns how many it
// delivered; on error the rest are still to be sent (after backoff).
// "Delivered" means written whole to the connection.
func (t *transport) send(ctx context.Context, b *batch, from int) (int, error) {
	if t.conn != nil && (t.peerGone() || (t.framing != frameDatagram && t.peerClosed())) {
		// The receiver closed the connection (say, it restarted). A
		// write would still succeed into the dead socket and its
		// messages would be lost silently, so redial instead.
		t.drop(false)
		if t.resend.len() > 0 {
			// It closed on messages it had not acknowledged: a failure,
			// so that a receiver that keeps doing it (a session limit,
			// a broken one) is backed off from, not redialed in a loop.
			t.fails++
			return 0, errPeerClosed
		}
	}
	if t.conn == nil {
		if err := t.dial(ctx); err != nil {
			t.fails++
			return 0, fmt.Errorf("dial: %w", bare(err))
		}
	}
	if t.framing != frameDatagram {
		t.trimAcked()
		if t.resend.len() > 0 {
			if err := t.writeResend(); err != nil {
				t.drop(false)
				t.fails++
				return 0, err
			}
		}
	}
	var n int
	var err error
	if t.framing == frameDatagram {
		n, err = t.sendDatagrams(b, from)
	} else {
		n, err = t.sendStream(b, from)
	}
	if err != nil {
		if !errors.Is(err, errMsgSize) {
			t.drop(false)
		}
		t.fails++
		return n, err
	}
	// Success resets the backoff once the receiver shows it takes what
	// it is sent: an acknowledgement, or nothing left to acknowledge.
	if t.progress || len(t.spans) == 0 {
		t.fails = 0
	}
	t.progress = false
	return n, nil
}

// errPeerClosed: the receiver closed the connection before acknowledging
// everything sent on it; the rest is sent again.
var errPeerClosed = errors.New("connection closed by the receiver with messages unacknowledged; resending them")

func (t *transport) sendDatagrams(b *batch, from int) (int, error) {
	if err := t.conn.SetWriteDeadline(time.Now().Add(t.timeout)); err != nil {
		return 0, fmt.Errorf("set deadline: %w", bare(err))
	}
	for i := from; i < b.len(); i++ {
		if _, err := t.conn.Write(b.msg(i)); err != nil {
			if errors.Is(err, syscall.EMSGSIZE) {
				return i - from, fmt.Errorf("write: %w (%d bytes)", errMsgSize, len(b.msg(i)))
			}
			return i - from, fmt.Errorf("write: %w", bare(err))
		}
	}
	return b.len() - from, nil
}

func (t *transport) sendStream(b *batch, from int) (int, error) {
	i := from
	for i < b.len() {
		// Frame as many messages as fit a chunk (at least one), and over
		// RELP the window.
		room := b.len()
		if t.framing == frameRELP {
			var err error
			if room, err = t.relpRoom(); err != nil {
				return i - from, err
			}
		}
		t.frame, t.cuts, t.msgs, t.seqs = t.frame[:0], t.cuts[:0], t.msgs[:0], t.seqs[:0]
		limit := chunkSize
		if t.network == "tls" {
			limit = tlsRecord
		}
		for i < b.len() && len(t.cuts) < room && (len(t.frame) == 0 || len(t.frame)+len(b.msg(i)) <= limit) {
			var start int
			t.frame, start = t.appendFramed(t.frame, b.msg(i))
			t.cuts = append(t.cuts, len(t.frame))
			t.msgs = append(t.msgs, start)
			i++
		}
		first := i - len(t.cuts)
		if err := t.conn.SetWriteDeadline(time.Now().Add(t.timeout)); err != nil {
			return first - from, fmt.Errorf("set deadline: %w", bare(err))
		}
		rawStart := uint64(0)
		if t.counted != nil {
			rawStart = t.counted.n
		}
		n, err := t.conn.Write(t.frame)
		if t.tracked() && n > 0 {
			t.rememberChunk(t.frame[:n], rawStart)
		}
		if err != nil {
			// Messages written whole count as delivered; the one cut
			// short is sent again, whole, on the next connection (the
			// receiver discards a truncated frame when the connection
			// closes).
			whole := 0
			for whole < len(t.cuts) && t.cuts[whole] <= n {
				whole++
			}
			return first + whole - from, fmt.Errorf("write: %w", bare(err))
		}
	}
	return i - from, nil
}

// appendFramed appends msg framed for the connection and returns where
// the message starts.
func (t *transport) appendFramed(dst, msg []byte) ([]byte, int) {
	switch t.framing {
	case frameOctet:
		dst = strconv.AppendInt(dst, int64(len(msg)), 10)
		dst = append(dst, ' ')
	case frameLF:
		start := len(dst)
		dst = append(dst, msg...)
		return append(dst, '\n'), start
	case frameRELP:
		seq := t.relpSeq.Add(1)
		t.seqs = append(t.seqs, seq)
		return appendRELP(dst, relpWire(seq), "syslog", msg)
	}
	start := len(dst)
	return append(dst, msg...), start
}

// lost returns a channel closed when the connection ends while it holds
// messages not yet acknowledged (nil otherwise): the sender wakes then to
// resend them.
func (t *transport) lost() <-chan struct{} {
	if len(t.spans) == 0 {
		return nil
	}
	return t.gone
}

// owes reports whether messages already taken from the queue wait to be
// sent again: reclaimed ones, or unacknowledged ones on a connection that
// has ended.
func (t *transport) owes() bool {
	return t.resend.len() > 0 || (len(t.spans) > 0 && t.peerGone())
}

// tracked reports whether the connection keeps what it wrote until it
// is acknowledged: TCP and TLS (by bytes), RELP (by answers).
func (t *transport) tracked() bool { return t.counted != nil || t.framing == frameRELP }

// trailer is how many bytes the framing puts after a message.
func (t *transport) trailer() int {
	if t.framing == frameLF || t.framing == frameRELP {
		return 1
	}
	return 0
}

// backoff returns how long to wait before the next attempt. The first
// failure after a success retries at once (a receiver restart costs no
// delay); then the wait doubles from minBackoff up to maxBackoff, with
// ±20% jitter so that many hosts do not redial in step.
func (t *transport) backoff() time.Duration {
	if t.fails <= 1 {
		return 0
	}
	d := t.maxBackoff
	if shift := t.fails - 2; shift < 30 {
		d = min(t.minBackoff<<shift, t.maxBackoff)
	}
	return d - d/5 + rand.N(d*2/5+1)
}

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
	return t.dialTLSOn(ctx, raw)
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

// rememberChunk keeps a written chunk's whole messages until they are
// acknowledged, each with the stream offset its last byte has: exact
// over TCP; over TLS the chunk's end, since a record (a chunk is one)
// can be read only whole; over RELP its transaction. A message cut by a
// short write is not kept: the caller still holds it and sends it whole
// on the next connection, and the receiver discards the truncated frame.
func (t *transport) rememberChunk(framed []byte, rawStart uint64) {
	prev := 0
	for k, c := range t.cuts {
		if c > len(framed) {
			break
		}
		var rawEnd uint64
		switch {
		case t.framing == frameRELP:
			rawEnd = t.seqs[k]
		case t.network == "tcp":
			rawEnd = rawStart + uint64(c)
		default:
			rawEnd = t.counted.n // TLS: the record's end
		}
		off := len(t.unacked)
		t.unacked = append(t.unacked, framed[prev:c]...)
		t.spans = append(t.spans, sentSpan{off: off, end: len(t.unacked),
			msgOff: off + t.msgs[k] - prev, msgEnd: len(t.unacked) - t.trailer(), rawEnd: rawEnd})
		prev = c
	}
}

// trimAcked forgets what the receiver has acknowledged: its kernel over
// TCP, the receiver itself over RELP.
func (t *transport) trimAcked() {
	if len(t.spans) == 0 {
		return
	}
	acked, ok := t.relpAcked.Load(), true
	if t.framing != frameRELP {
		acked, ok = t.bytesAcked()
	} else if n, err := t.relpRefused(acked); n > 0 && t.refusals != nil {
		t.refusals(n, err)
	}
	if !ok {
		return
	}
	k := 0
	for k < len(t.spans) && t.spans[k].rawEnd <= acked {
		k++
	}
	if k == 0 {
		return
	}
	t.progress = true
	cut := t.spans[k-1].end
	t.unacked = t.unacked[:copy(t.unacked, t.unacked[cut:])]
	t.spans = t.spans[:copy(t.spans, t.spans[k:])]
	for i := range t.spans {
		sp := &t.spans[i]
		sp.off, sp.end, sp.msgOff, sp.msgEnd = sp.off-cut, sp.end-cut, sp.msgOff-cut, sp.msgEnd-cut
	}
}

// reclaim moves the messages the dead connection never had acknowledged
// to resend, unframed (the next connection frames them anew: RELP
// numbers its transactions per connection), ahead of any still there.
func (t *transport) reclaim() {
	t.trimAcked()
	n := len(t.spans)
	if n == 0 {
		return
	}
	t.spare.reset()
	for _, sp := range t.spans {
		t.spare.add(t.unacked[sp.msgOff:sp.msgEnd])
	}
	for i := range t.resend.len() {
		t.spare.add(t.resend.msg(i))
	}
	t.resend, t.spare = t.spare, t.resend
	t.unacked, t.spans = t.unacked[:0], t.spans[:0]
	if t.reclaims != nil {
		t.reclaims(n)
	}
}

// writeResend writes the reclaimed messages first on a new connection.
// Those written are counted again and kept until acknowledged, like any
// other; the rest stay for the next connection.
func (t *transport) writeResend() error {
	n, err := t.sendStream(&t.resend, 0)
	if n > 0 && t.reclaims != nil {
		t.reclaims(-n)
	}
	if err != nil {
		t.resend.dropFront(n)
		return err
	}
	t.resend.reset()
	return nil
}

// bytesAcked returns tcp_info's bytes_acked (Linux 4.1+) of the TCP
// connection.
func (t *transport) bytesAcked() (uint64, bool) {
	info, ok := t.probe.get()
	if !ok {
		return 0, false
	}
	return info.Bytes_acked, true
}

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
	t.unacked, t.spans = t.unacked[:0], t.spans[:0]
	t.conn, t.raw, t.gone, t.readerDone, t.counted, t.br, t.probe = nil, nil, nil, nil, nil, nil, nil
	return err
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

// tcpEstablished is TCP_ESTABLISHED in tcp_info's state.
const tcpEstablished = 1
