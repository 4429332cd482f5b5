package sink

import "net"

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
	if t.acked != nil {
		t.acked(k)
	}
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
