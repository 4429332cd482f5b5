package sink

// RELP, rsyslog's Reliable Event Logging Protocol, is written here by hand:
// no maintained Go client exists, and the protocol is small (a frame
// format and four commands). Its point for us is the acknowledgement: the
// receiver answers each syslog frame once the message is in its queue, so
// what a receiver took but never processed (a restart) comes back to the
// sender instead of vanishing in a socket buffer as it does over TCP.
//
// A frame is "TXNR SP COMMAND SP DATALEN [SP DATA] LF". The client opens
// the session with "open", sends "syslog" frames, and closes with
// "close"; the server answers each with "rsp" carrying the same
// transaction number and a status ("200 OK"), in order, and may announce
// its own shutdown with "serverclose" (transaction number 0).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

const (
	// relpMaxTxnr: transaction numbers run 1..999999999 and wrap to 1.
	relpMaxTxnr = 999_999_999
	// relpWindow is how many syslog frames may await their answer: a
	// bound on what a dead connection gives back, large enough that a
	// loopback or LAN receiver never makes the sender wait.
	relpWindow = 1024
	// relpMaxData bounds a frame the server sends (answers are short).
	relpMaxData = 64 << 10
	// relpOffer is the open command's data.
	relpOffer = "relp_version=0\nrelp_software=connlogd\ncommands=syslog"
	// relpLinger bounds the wait for answers on a connection being
	// dropped.
	relpLinger = time.Second
)

var errRELP = errors.New("relp")

// relpWire is the transaction number a connection's seq-th command
// (1-based) carries on the wire.
func relpWire(seq uint64) uint64 { return (seq-1)%relpMaxTxnr + 1 }

// appendRELP appends a frame and returns where its data starts.
func appendRELP(dst []byte, txnr uint64, cmd string, data []byte) ([]byte, int) {
	dst = strconv.AppendUint(dst, txnr, 10)
	dst = append(dst, ' ')
	dst = append(dst, cmd...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(data)), 10)
	if len(data) > 0 {
		dst = append(dst, ' ')
	}
	start := len(dst)
	dst = append(dst, data...)
	return append(dst, '\n'), start
}

// relpFrame is one parsed frame; data is valid until the next read.
type relpFrame struct {
	txnr uint64
	cmd  string
	data []byte
}

// readRELP reads one frame, checking every field's syntax and the
// trailer. It allocates nothing for the commands it knows.
func readRELP(r *bufio.Reader, buf []byte) (relpFrame, []byte, error) {
	var f relpFrame
	var tok [32]byte
	n, err := readToken(r, tok[:9])
	if err != nil {
		return f, buf, err
	}
	for _, c := range tok[:n] {
		if c < '0' || c > '9' {
			return f, buf, fmt.Errorf("%w: bad transaction number %q", errRELP, string(tok[:n]))
		}
		f.txnr = f.txnr*10 + uint64(c-'0')
	}
	if n, err = readToken(r, tok[:]); err != nil {
		return f, buf, unexpectedEOF(err)
	}
	f.cmd = relpCommand(tok[:n])
	// DATALEN ends with SP (data follows) or LF (no data).
	var size int
	for digits := 0; ; digits++ {
		c, err := r.ReadByte()
		if err != nil {
			return f, buf, unexpectedEOF(err)
		}
		if c == ' ' || c == '\n' {
			if digits == 0 || (c == '\n' && size != 0) {
				return f, buf, fmt.Errorf("%w: bad data length in %s frame", errRELP, f.cmd)
			}
			if c == '\n' {
				return f, buf, nil
			}
			break
		}
		if c < '0' || c > '9' || digits >= 9 {
			return f, buf, fmt.Errorf("%w: bad data length in %s frame", errRELP, f.cmd)
		}
		size = size*10 + int(c-'0')
	}
	if size > relpMaxData {
		return f, buf, fmt.Errorf("%w: %s frame of %d bytes", errRELP, f.cmd, size)
	}
	if cap(buf) < size+1 {
		buf = make([]byte, size+1)
	}
	buf = buf[:size+1]
	if _, err := io.ReadFull(r, buf); err != nil {
		return f, buf, unexpectedEOF(err)
	}
	if buf[size] != '\n' {
		return f, buf, fmt.Errorf("%w: %s frame without its trailer", errRELP, f.cmd)
	}
	f.data = buf[:size]
	return f, buf, nil
}

// relpCommand returns the command's name, a constant for those RELP
// defines.
func relpCommand(b []byte) string {
	for _, c := range [...]string{"rsp", "syslog", "open", "close", "serverclose"} {
		if string(b) == c {
			return c
		}
	}
	return string(b)
}

// readToken reads into tok up to len(tok) non-space bytes ended by one SP
// and returns how many.
func readToken(r *bufio.Reader, tok []byte) (int, error) {
	n := 0
	for {
		c, err := r.ReadByte()
		if err != nil {
			if n == 0 && err == io.EOF {
				return 0, io.EOF // between frames: a clean close
			}
			return 0, unexpectedEOF(err)
		}
		if c == ' ' {
			if n == 0 {
				return 0, fmt.Errorf("%w: empty header field", errRELP)
			}
			return n, nil
		}
		if c < 33 || c > 126 || n >= len(tok) {
			return 0, fmt.Errorf("%w: bad header field", errRELP)
		}
		tok[n] = c
		n++
	}
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// relpStatus returns an answer's status code and text ("200", "OK"); 0
// and the whole line when it has no code.
func relpStatus(data []byte) (code int, text []byte) {
	line, _, _ := bytes.Cut(data, []byte{'\n'})
	c, t, _ := bytes.Cut(line, []byte{' '})
	if len(c) != 3 {
		return 0, line
	}
	for _, d := range c {
		if d < '0' || d > '9' {
			return 0, line
		}
		code = code*10 + int(d-'0')
	}
	return code, t
}

// relpAnswer checks that f answers the command seq of the connection. A
// well-formed answer that refuses the command returns an errRefused.
func relpAnswer(f relpFrame, seq uint64) error {
	if f.cmd == "serverclose" {
		return fmt.Errorf("%w: the receiver is closing the session", errRELP)
	}
	if f.cmd != "rsp" {
		return fmt.Errorf("%w: unexpected %q frame from the receiver", errRELP, f.cmd)
	}
	if f.txnr != relpWire(seq) {
		return fmt.Errorf("%w: answer to transaction %d, expected %d", errRELP, f.txnr, relpWire(seq))
	}
	if code, text := relpStatus(f.data); code != 200 {
		return fmt.Errorf("%w: transaction %d: %d %s", errRefused, f.txnr, code, text)
	}
	return nil
}

// errRefused: the receiver answered a message with a status other than
// 200. The message is counted as dropped, not resent: it was answered,
// and resending what a receiver refuses (say, too large) could go on
// forever.
var errRefused = fmt.Errorf("%w: message refused by the receiver", errRELP)

// relpOfferAccepted checks the open command's answer: it must accept
// the syslog command.
func relpOfferAccepted(data []byte) error {
	_, rest, _ := bytes.Cut(data, []byte{'\n'})
	for line := range bytes.SplitSeq(rest, []byte{'\n'}) {
		if k, v, ok := bytes.Cut(line, []byte{'='}); ok && string(k) == "commands" {
			for c := range bytes.SplitSeq(v, []byte{','}) {
				if string(bytes.TrimSpace(c)) == "syslog" {
					return nil
				}
			}
			return fmt.Errorf("%w: the receiver does not take syslog commands (offers %q)", errRELP, v)
		}
	}
	return nil // librelp servers list it; one that does not say is taken at its word
}

// relpOpen opens the session on a new connection: the open command and
// its answer, within the transport's timeout.
func (t *transport) relpOpen(c net.Conn) error {
	if err := c.SetDeadline(time.Now().Add(t.timeout)); err != nil {
		return fmt.Errorf("relp open: %w", bare(err))
	}
	frame, _ := appendRELP(nil, 1, "open", []byte(relpOffer))
	if _, err := c.Write(frame); err != nil {
		return fmt.Errorf("relp open: %w", bare(err))
	}
	br := bufio.NewReader(c)
	f, _, err := readRELP(br, nil)
	if err != nil {
		return fmt.Errorf("relp open: %w", bare(err))
	}
	if err := relpAnswer(f, 1); err != nil {
		return fmt.Errorf("relp open: %w", err)
	}
	if err := relpOfferAccepted(f.data); err != nil {
		return fmt.Errorf("relp open: %w", err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("relp open: %w", bare(err))
	}
	t.br = br
	t.relpSeq.Store(1)
	t.relpAcked.Store(1)
	t.refused = t.refused[:0]
	return nil
}

// relpRead is a RELP connection's reader goroutine: it takes the
// answers, in order, and records the last; anything else (a refusal, the
// receiver's serverclose, a malformed frame, the connection's end) ends
// the connection: what was not answered is then resent on the next.
func (t *transport) relpRead(br *bufio.Reader, gone, done, ackSig chan struct{}) {
	defer close(done)
	var buf []byte
	for {
		var f relpFrame
		var err error
		f, buf, err = readRELP(br, buf)
		if err == nil {
			next := t.relpAcked.Load() + 1
			if next > t.relpSeq.Load() {
				err = fmt.Errorf("%w: answer to transaction %d, which was not sent", errRELP, f.txnr)
			} else if err = relpAnswer(f, next); err == nil || errors.Is(err, errRefused) {
				if err != nil {
					t.refMu.Lock()
					t.refused = append(t.refused, next)
					t.refErr = err
					t.refMu.Unlock()
				}
				t.relpAcked.Store(next)
				select {
				case ackSig <- struct{}{}:
				default:
				}
				continue
			}
		}
		if err == io.EOF {
			err = errors.New("connection closed by the receiver")
		}
		t.goneErr = err
		close(gone)
		return
	}
}

// relpRoom waits until the window has room and returns how many frames
// it has room for.
func (t *transport) relpRoom() (int, error) {
	for {
		if open := t.relpSeq.Load() - t.relpAcked.Load(); open < relpWindow {
			return relpWindow - int(open), nil
		}
		if err := t.relpAwait(); err != nil {
			return 0, err
		}
	}
}

// relpWait waits until transaction seq is answered.
func (t *transport) relpWait(seq uint64) error {
	for t.relpAcked.Load() < seq {
		if err := t.relpAwait(); err != nil {
			return err
		}
	}
	t.trimAcked() // takes the refusals too
	return nil
}

// relpAwait waits for the next answer, the connection's end, or the
// timeout.
func (t *transport) relpAwait() error {
	// One timer for the connection's life: a busy sender waits here for
	// every window.
	if t.ackTimer == nil {
		t.ackTimer = time.NewTimer(t.timeout)
	} else {
		t.ackTimer.Reset(t.timeout)
	}
	defer t.ackTimer.Stop()
	select {
	case <-t.ackSig:
		t.trimAcked()
		return nil
	case <-t.gone:
		return t.goneErr
	case <-t.ackTimer.C:
		return fmt.Errorf("%w: no answer within %v", errRELP, t.timeout)
	}
}

// relpLinger lets a connection about to be dropped deliver the answers
// already on their way: it ends the sending side and waits, briefly, for
// the reader to reach the end. Without it, answers still in the socket
// buffer would be thrown away and their messages sent twice.
func (t *transport) relpLinger() {
	if t.peerGone() {
		return
	}
	if tc, ok := t.raw.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	tm := time.NewTimer(min(t.timeout, relpLinger))
	defer tm.Stop()
	select {
	case <-t.gone:
	case <-tm.C:
	}
}

// relpRefused takes the refusals among the transactions up to acked:
// how many, and the last one's error.
func (t *transport) relpRefused(acked uint64) (int, error) {
	t.refMu.Lock()
	defer t.refMu.Unlock()
	n := 0
	for n < len(t.refused) && t.refused[n] <= acked {
		n++
	}
	t.refused = t.refused[:copy(t.refused, t.refused[n:])]
	return n, t.refErr
}

// relpClose ends the session politely; the receiver answers and closes.
// Best effort: everything was answered already.
func (t *transport) relpClose() {
	frame, _ := appendRELP(nil, relpWire(t.relpSeq.Add(1)), "close", nil)
	t.conn.SetWriteDeadline(time.Now().Add(t.timeout))
	t.conn.Write(frame)
}
