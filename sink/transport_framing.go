package sink

import "strconv"

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

// trailer is how many bytes the framing puts after a message.
func (t *transport) trailer() int {
	if t.framing == frameLF || t.framing == frameRELP {
		return 1
	}
	return 0
}
