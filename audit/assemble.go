package audit

import (
	"bytes"
	"time"
)

// maxPending bounds the events being assembled: the kernel sends an
// event's records one after another, but records of other CPUs' events
// may come in between, and an event whose EOE was lost must not stay.
const maxPending = 256

// Assembler joins the records of each event (same serial) into a Call.
// Records come in the kernel's order: SYSCALL first, then SOCKADDR and
// the other auxiliary records, PROCTITLE, and EOE last. An event whose
// SYSCALL is not a followed socket call costs the parse of that one
// record; its other records are dropped by serial.
//
// It is pure: no syscalls, no clock. Not safe for concurrent use.
type Assembler struct {
	pending []*Call // oldest first
	free    []*Call
	skip    uint64 // serial of the last event found not to be a socket call
	// Malformed counts records that did not parse; LastErr is the last
	// such error.
	Malformed uint64
	LastErr   error
	// Evicted counts events given up on before their EOE (a full table).
	Evicted uint64
	// Latest is the time of the newest record parsed.
	Latest time.Time
}

// Add takes one record: its netlink message type and text. It returns
// a finished Call, valid until the next Add, or nil.
func (a *Assembler) Add(typ uint16, text []byte) *Call {
	switch typ {
	case TypeSyscall, TypeSockaddr, TypeSocketcall, TypeProctitle, TypeEOE:
	default:
		return nil
	}
	text = bytes.TrimRight(text, "\x00\n")
	h, rest, err := parseHeader(text)
	if err != nil {
		a.bad(err)
		return nil
	}
	if h.Time.After(a.Latest) {
		a.Latest = h.Time
	}
	if h.Serial == a.skip && typ != TypeSyscall {
		return nil
	}
	if typ == TypeSyscall {
		c := a.alloc()
		*c = Call{Header: h}
		ok, err := parseSyscall(rest, c)
		if err != nil || !ok {
			a.free = append(a.free, c)
			a.skip = h.Serial
			if err != nil {
				a.bad(err)
			}
			return nil
		}
		if len(a.pending) >= maxPending {
			a.Evicted++
			a.free = append(a.free, a.pending[0])
			a.pending = a.pending[1:]
		}
		a.pending = append(a.pending, c)
		return nil
	}
	i := a.find(h.Serial)
	if i < 0 {
		return nil
	}
	c := a.pending[i]
	switch typ {
	case TypeSockaddr:
		err = parseSockaddrRecord(rest, c)
	case TypeSocketcall:
		err = parseSocketcall(rest, c)
	case TypeProctitle:
		err = parseProctitle(rest, c)
	case TypeEOE:
		a.pending = append(a.pending[:i], a.pending[i+1:]...)
		a.free = append(a.free, c)
		return c
	}
	if err != nil {
		a.bad(err)
	}
	return nil
}

// find returns the index of the pending event with serial, or -1. The
// one being assembled is nearly always the newest.
func (a *Assembler) find(serial uint64) int {
	for i := len(a.pending) - 1; i >= 0; i-- {
		if a.pending[i].Serial == serial {
			return i
		}
	}
	return -1
}

func (a *Assembler) alloc() *Call {
	if n := len(a.free); n > 0 {
		c := a.free[n-1]
		a.free = a.free[:n-1]
		return c
	}
	return new(Call)
}

func (a *Assembler) bad(err error) {
	a.Malformed++
	a.LastErr = err
}

// Pending returns how many events are being assembled.
func (a *Assembler) Pending() int { return len(a.pending) }
