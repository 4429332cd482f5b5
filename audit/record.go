package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Record types this package reads (linux/audit.h). Every other type on
// the read-log group is skipped by its netlink header alone.
const (
	TypeSyscall    = 1300 // AUDIT_SYSCALL: the call, its arguments and the task
	TypeSockaddr   = 1306 // AUDIT_SOCKADDR: the address argument
	TypeSocketcall = 1304 // AUDIT_SOCKETCALL: socketcall(2)'s real arguments
	TypeEOE        = 1320 // AUDIT_EOE: end of the event
	TypeProctitle  = 1327 // AUDIT_PROCTITLE: the command line
)

// ErrMalformed wraps every parse error: a record that does not have the
// shape the kernel gives it.
var ErrMalformed = errors.New("malformed audit record")

// Op is what a call did to a socket.
type Op uint8

// Socket calls an event can come from.
const (
	OpNone    Op = iota
	OpConnect    // connect(2): the record's address is the peer connected to
	OpAccept     // accept(2), accept4(2): the address is the peer accepted
)

func (o Op) String() string {
	switch o {
	case OpConnect:
		return "connect"
	case OpAccept:
		return "accept"
	}
	return "none"
}

// Header is the "audit(SECONDS.MILLIS:SERIAL): " prefix every record
// carries. The records of one event share it.
type Header struct {
	Time   time.Time
	Serial uint64
}

// parseHeader splits a record's text into its header and the fields.
func parseHeader(b []byte) (Header, []byte, error) {
	const open = "audit("
	if !bytes.HasPrefix(b, []byte(open)) {
		return Header{}, nil, fmt.Errorf("%w: no audit( prefix", ErrMalformed)
	}
	b = b[len(open):]
	end := bytes.IndexByte(b, ')')
	if end < 0 {
		return Header{}, nil, fmt.Errorf("%w: header not closed", ErrMalformed)
	}
	stamp, rest := b[:end], b[end+1:]
	colon := bytes.IndexByte(stamp, ':')
	dot := bytes.IndexByte(stamp, '.')
	if colon < 0 || dot < 0 || dot > colon {
		return Header{}, nil, fmt.Errorf("%w: header %q", ErrMalformed, stamp)
	}
	sec, err1 := parseUint(stamp[:dot], 10, 40)
	ms, err2 := parseUint(stamp[dot+1:colon], 10, 32)
	serial, err3 := parseUint(stamp[colon+1:], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || ms > 999 || colon-dot != 4 {
		return Header{}, nil, fmt.Errorf("%w: header %q", ErrMalformed, stamp)
	}
	rest = bytes.TrimPrefix(rest, []byte(":"))
	return Header{Time: time.Unix(int64(sec), int64(ms)*int64(time.Millisecond)), Serial: serial}, rest, nil
}

// parseUint parses digits without allocating (strconv.ParseUint would
// take a string).
func parseUint(b []byte, base int, bits int) (uint64, error) {
	if len(b) == 0 || len(b) > 20 {
		return 0, ErrMalformed
	}
	var n uint64
	for _, c := range b {
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case base == 16 && c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case base == 16 && c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, ErrMalformed
		}
		if n > (1<<64-1-d)/uint64(base) {
			return 0, ErrMalformed
		}
		n = n*uint64(base) + d
	}
	if bits < 64 && n >= 1<<bits {
		return 0, ErrMalformed
	}
	return n, nil
}

// fields iterates over the space-separated key=value fields of a record.
// A quoted value runs to its closing quote: the kernel quotes only
// strings without spaces or quotes, and hex-encodes the others.
type fields struct {
	b []byte
}

func (f *fields) next() (key, val []byte, ok bool) {
	for len(f.b) > 0 && (f.b[0] == ' ' || f.b[0] == 0 || f.b[0] == '\n') {
		f.b = f.b[1:]
	}
	if len(f.b) == 0 {
		return nil, nil, false
	}
	eq := bytes.IndexByte(f.b, '=')
	sp := bytes.IndexByte(f.b, ' ')
	if eq < 0 || (sp >= 0 && sp < eq) {
		// A word without a value (older kernels wrote some): skip it.
		if sp < 0 {
			f.b = nil
			return nil, nil, false
		}
		f.b = f.b[sp:]
		return f.next()
	}
	key, f.b = f.b[:eq], f.b[eq+1:]
	if len(f.b) > 0 && f.b[0] == '"' {
		end := bytes.IndexByte(f.b[1:], '"')
		if end < 0 {
			val, f.b = f.b, nil
			return key, val, true
		}
		val, f.b = f.b[:end+2], f.b[end+2:]
		return key, val, true
	}
	end := bytes.IndexAny(f.b, " \x00\n")
	if end < 0 {
		val, f.b = f.b, nil
	} else {
		val, f.b = f.b[:end], f.b[end:]
	}
	return key, val, true
}

// untrusted decodes a string the task controls (comm, exe, proctitle,
// key): quoted as is, "(null)" for none, hex-encoded otherwise.
func untrusted(v []byte) ([]byte, error) {
	switch {
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		return v[1 : len(v)-1], nil
	case string(v) == "(null)" || string(v) == "(none)":
		return nil, nil
	}
	out := make([]byte, hex.DecodedLen(len(v)))
	if _, err := hex.Decode(out, v); err != nil {
		return nil, fmt.Errorf("%w: string value %.40q is neither quoted nor hex", ErrMalformed, v)
	}
	return out, nil
}

// parseSockaddr decodes a SOCKADDR record's saddr: the raw struct
// sockaddr in hex. Only inet addresses give a peer; ok is false for
// others (a Unix socket's connect).
func parseSockaddr(v []byte) (netip.AddrPort, bool, error) {
	if len(v) > 2*128 { // sizeof(struct sockaddr_storage)
		return netip.AddrPort{}, false, fmt.Errorf("%w: saddr of %d hex digits", ErrMalformed, len(v))
	}
	var buf [128]byte
	n, err := hex.Decode(buf[:], v)
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("%w: saddr: %v", ErrMalformed, err)
	}
	b := buf[:n]
	if len(b) < 2 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: saddr of %d bytes", ErrMalformed, len(b))
	}
	port := func() uint16 { return binary.BigEndian.Uint16(b[2:4]) }
	// sa_family is in the host's byte order.
	switch binary.NativeEndian.Uint16(b[:2]) {
	case afInet:
		if len(b) < 8 {
			return netip.AddrPort{}, false, fmt.Errorf("%w: AF_INET saddr of %d bytes", ErrMalformed, len(b))
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port()), true, nil
	case afInet6:
		if len(b) < 24 {
			return netip.AddrPort{}, false, fmt.Errorf("%w: AF_INET6 saddr of %d bytes", ErrMalformed, len(b))
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port()), true, nil
	}
	return netip.AddrPort{}, false, nil
}

const (
	afInet  = 2
	afInet6 = 10
)

// Call is one audited socket call, assembled from the records of its
// event.
type Call struct {
	Header
	Op      Op
	Arch    uint32
	Syscall uint32
	Success bool
	Exit    int64
	// FD is the socket's descriptor in the task: connect's first
	// argument, accept's result; -1 when unknown.
	FD    int32
	PID   int32
	PPID  int32
	UID   uint32
	EUID  uint32
	FSUID uint32 // the owner of the sockets it creates
	AUID  uint32
	Comm  string
	Exe   string
	Key   string
	// Peer is the address of the SOCKADDR record: who connect connected
	// to, or who accept accepted; invalid when the event had none, or it
	// was not an inet address.
	Peer netip.AddrPort
	// Proctitle is the raw command line (arguments ended by NULs), nil
	// when the event had no PROCTITLE record.
	Proctitle []byte

	a0 uint64 // socketcall's call number, or connect's descriptor
}

// parseSyscall fills c from a SYSCALL record's fields. It returns false
// for a call that is not a socket call this package follows, having read
// only as far as needed to tell.
func parseSyscall(b []byte, c *Call) (bool, error) {
	f := fields{b}
	var have uint32
	const (
		hArch = 1 << iota
		hSyscall
		hPID
		hA0
	)
	for {
		k, v, ok := f.next()
		if !ok {
			break
		}
		var err error
		switch string(k) {
		case "arch":
			var n uint64
			n, err = parseUint(v, 16, 32)
			c.Arch = uint32(n)
			have |= hArch
		case "syscall":
			var n uint64
			n, err = parseUint(v, 10, 32)
			c.Syscall = uint32(n)
			have |= hSyscall
			if have&hArch != 0 && !interesting(c.Arch, c.Syscall) {
				return false, nil
			}
		case "success":
			c.Success = string(v) == "yes"
		case "exit":
			c.Exit, err = strconv.ParseInt(string(v), 10, 64)
		case "a0":
			c.a0, err = parseUint(v, 16, 64)
			have |= hA0
		case "pid":
			var n uint64
			n, err = parseUint(v, 10, 31)
			c.PID = int32(n)
			have |= hPID
		case "ppid":
			var n uint64
			n, err = parseUint(v, 10, 31)
			c.PPID = int32(n)
		case "uid":
			c.UID, err = parseID(v)
		case "euid":
			c.EUID, err = parseID(v)
		case "fsuid":
			c.FSUID, err = parseID(v)
		case "auid":
			c.AUID, err = parseID(v)
		case "comm", "exe", "key":
			var s []byte
			if s, err = untrusted(v); err == nil {
				switch k[0] {
				case 'c':
					c.Comm = string(s)
				case 'e':
					c.Exe = string(s)
				default:
					c.Key = string(s)
				}
			}
		}
		if err != nil {
			return false, fmt.Errorf("%w: SYSCALL field %s=%.40q", ErrMalformed, k, v)
		}
	}
	if have != hArch|hSyscall|hPID|hA0 {
		return false, fmt.Errorf("%w: SYSCALL record without arch, syscall, a0 or pid", ErrMalformed)
	}
	if !interesting(c.Arch, c.Syscall) {
		return false, nil
	}
	c.Op = opOf(c.Arch, c.Syscall, c.a0)
	if c.Op == OpNone {
		return false, nil // a socketcall of another kind
	}
	c.FD = -1
	switch {
	case c.Op == OpAccept && c.Success && c.Exit >= 0 && c.Exit < 1<<31:
		c.FD = int32(c.Exit)
	case c.Op == OpConnect && !isSocketcall(c.Arch, c.Syscall) && c.a0 < 1<<31:
		c.FD = int32(c.a0)
	}
	return true, nil
}

// parseID parses a uid, which the kernel prints in decimal (4294967295
// for unset).
func parseID(v []byte) (uint32, error) {
	n, err := parseUint(v, 10, 32)
	return uint32(n), err
}

// parseSocketcall takes socketcall(2)'s first real argument, the
// descriptor, from a SOCKETCALL record ("nargs=3 a0=5 a1=...").
func parseSocketcall(b []byte, c *Call) error {
	f := fields{b}
	for {
		k, v, ok := f.next()
		if !ok {
			return nil
		}
		if string(k) == "a0" {
			n, err := parseUint(v, 16, 64)
			if err != nil {
				return fmt.Errorf("%w: SOCKETCALL a0=%.40q", ErrMalformed, v)
			}
			if c.Op == OpConnect && n < 1<<31 {
				c.FD = int32(n)
			}
			return nil
		}
	}
}

// parseSockaddrRecord takes the peer of a SOCKADDR record.
func parseSockaddrRecord(b []byte, c *Call) error {
	f := fields{b}
	for {
		k, v, ok := f.next()
		if !ok {
			return fmt.Errorf("%w: SOCKADDR record without saddr", ErrMalformed)
		}
		if string(k) == "saddr" {
			p, ok, err := parseSockaddr(v)
			if err != nil {
				return err
			}
			if ok {
				c.Peer = p
			}
			return nil
		}
	}
}

// parseProctitle takes a PROCTITLE record's command line.
func parseProctitle(b []byte, c *Call) error {
	f := fields{b}
	for {
		k, v, ok := f.next()
		if !ok {
			return fmt.Errorf("%w: PROCTITLE record without proctitle", ErrMalformed)
		}
		if string(k) == "proctitle" {
			s, err := untrusted(v)
			if err != nil {
				return err
			}
			c.Proctitle = bytes.Clone(s)
			return nil
		}
	}
}
