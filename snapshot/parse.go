package snapshot

import (
	"errors"
	"fmt"
)

// Stats counts what the parser refused. Every counter is cumulative; the
// daemon reports them so that nothing is dropped silently.
type Stats struct {
	Malformed   uint64 // messages or datagrams that did not parse
	Foreign     uint64 // messages not from the kernel or not for our request
	Interrupted uint64 // messages flagged NLM_F_DUMP_INTR
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.Malformed += o.Malformed
	s.Foreign += o.Foreign
	s.Interrupted += o.Interrupted
}

// DumpParser collects the replies of one dump request into a Table.
type DumpParser struct {
	Seq   uint32 // the request's sequence number
	Proto Proto  // the request's protocol
	Table *Table
	Stats *Stats
	// LastErr keeps the last malformed-message error, so the caller can
	// log one example alongside the count.
	LastErr error
}

// Feed parses one received datagram. It returns done when the dump's
// NLMSG_DONE arrived, and an error when the kernel failed the request.
// Malformed and foreign messages are counted and skipped.
func (p *DumpParser) Feed(b []byte) (done bool, err error) {
	it := NewMsgIter(b)
	for {
		h, payload, ok := it.Next()
		if !ok {
			break
		}
		if h.Seq != p.Seq {
			p.Stats.Foreign++
			continue
		}
		if h.Flags&FlagDumpIntr != 0 {
			p.Stats.Interrupted++
		}
		switch h.Type {
		case SockDiagByFam, TCPDiagGetSock:
			s := p.Table.Append()
			if err := ParseDiagMsg(payload, p.Proto, s); err != nil {
				p.Table.DropLast()
				p.Stats.Malformed++
				p.LastErr = err
			}
		case MsgDone:
			code, err := ParseErrno(payload)
			if err != nil {
				// Older kernels may send an empty DONE; it still ends the dump.
				return true, nil
			}
			if code != 0 {
				return true, &ErrnoError{Op: "dump", Code: code}
			}
			return true, nil
		case MsgError:
			code, err := ParseErrno(payload)
			if err != nil {
				p.Stats.Malformed++
				p.LastErr = err
				continue
			}
			if code != 0 {
				return true, &ErrnoError{Op: "dump", Code: code}
			}
		case MsgNoop:
		default:
			p.Stats.Malformed++
			p.LastErr = fmt.Errorf("%w: unexpected message type %d", ErrMalformed, h.Type)
		}
	}
	if e := it.Err(); e != nil {
		p.Stats.Malformed++
		p.LastErr = e
	}
	return false, nil
}

// LookupResult is the answer to one exact-match request.
type LookupResult uint8

// Lookup answers.
const (
	LookupUnknown LookupResult = iota // no answer, or one that proves nothing
	LookupAlive                       // the kernel returned the socket
	LookupGone                        // ENOENT: no socket has that tuple
	LookupStale                       // ESTALE: the tuple belongs to another socket now
	// LookupTimeWait: the kernel returned the socket's TIME_WAIT remnant
	// (state time_wait; it keeps the cookie): the connection is closed,
	// its full socket destroyed.
	LookupTimeWait
)

const (
	errnoENOENT = 2
	errnoESTALE = 116
)

// ParseLookupReply classifies the reply to one exact-match request.
func ParseLookupReply(h Header, payload []byte) (LookupResult, error) {
	switch h.Type {
	case SockDiagByFam:
		if len(payload) < DiagMsgLen {
			return LookupUnknown, fmt.Errorf("%w: lookup reply of %d bytes", ErrMalformed, len(payload))
		}
		if State(payload[1]) == StateTimeWait { // idiag_state
			return LookupTimeWait, nil
		}
		return LookupAlive, nil
	case MsgError:
		code, err := ParseErrno(payload)
		if err != nil {
			return LookupUnknown, err
		}
		switch code {
		case errnoENOENT:
			return LookupGone, nil
		case errnoESTALE:
			return LookupStale, nil
		case 0:
			return LookupUnknown, errors.New("lookup: unexpected ACK")
		}
		return LookupUnknown, &ErrnoError{Op: "lookup", Code: code}
	}
	return LookupUnknown, fmt.Errorf("%w: lookup reply of type %d", ErrMalformed, h.Type)
}
