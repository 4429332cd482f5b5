package sink

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
//
// This file holds the sending; transport_dial.go the connection's life
// (dial, the reader goroutine, drop), transport_framing.go how messages
// are delimited, transport_acks.go what is kept until the receiver
// acknowledges it, tcpinfo.go the tcp_info probe, relp.go the RELP
// session.
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
	// acked tells the sink that the receiver acknowledged the n oldest
	// written messages (or a graceful close delivered them): a spool
	// lets them go.
	acked func(n int)
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

// backoff returns how long to wait before the next attempt. The first
// failure after a success retries at once (a receiver restart costs no
// delay); then the wait doubles from minBackoff up to maxBackoff, with
// ±20% jitter so that many hosts do not redial in step.
func (t *transport) backoff() time.Duration {
	return jitteredBackoff(t.fails, t.minBackoff, t.maxBackoff)
}

// jitteredBackoff returns the wait before attempt fails+1: none after
// the first failure (a receiver restart costs no delay), then doubling
// from lo up to hi, with ±20% jitter so that many hosts do not retry in
// step. The syslog and otlp senders both back off by it.
func jitteredBackoff(fails int, lo, hi time.Duration) time.Duration {
	if fails <= 1 {
		return 0
	}
	d := hi
	if shift := fails - 2; shift < 30 {
		d = min(lo<<shift, hi)
	}
	return d - d/5 + rand.N(d*2/5+1)
}
