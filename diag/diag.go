package diag

import (
	"errors"
	"slices"

	"github.com/connlogd/connlogd/snapshot"
)

// ErrNotSupported is returned by Open on systems without sock_diag.
var ErrNotSupported = errors.New("sock_diag: not supported on this platform")

// Request selects one dump: a family and protocol, the idiag_ext
// extensions and the idiag_states mask.
type Request struct {
	Family snapshot.Family
	Proto  snapshot.Proto
	Ext    uint8
	States uint32
	// Bytecode is an optional inet_diag filter program run by the kernel.
	Bytecode []byte
}

func (r Request) String() string { return r.Proto.String() + "/" + r.Family.String() }

// Split returns r as one request per family: a FamilyAny request becomes
// IPv4 and IPv6 ones; any other is returned alone.
func (r Request) Split() []Request {
	if r.Family != snapshot.FamilyAny {
		return []Request{r}
	}
	v4, v6 := r, r
	v4.Family, v6.Family = snapshot.FamilyIPv4, snapshot.FamilyIPv6
	return []Request{v4, v6}
}

// Requests returns the dumps that cover the given protocols and families,
// asking for tcp_info on TCP when info is true.
//
// TCP over both families is one request (snapshot.FamilyAny): the kernel
// then walks its TCP hash tables once instead of twice. Split turns it
// back into one request per family where that is needed.
func Requests(protos []snapshot.Proto, fams []snapshot.Family, info bool) []Request {
	var out []Request
	both := slices.Contains(fams, snapshot.FamilyIPv4) && slices.Contains(fams, snapshot.FamilyIPv6)
	for _, p := range protos {
		if p == snapshot.ProtoTCP && both {
			r := Request{Family: snapshot.FamilyAny, Proto: p, States: snapshot.AllStates}
			if info {
				r.Ext = snapshot.ExtInfo
			}
			out = append(out, r)
			continue
		}
		for _, f := range fams {
			r := Request{Family: f, Proto: p, States: snapshot.AllStates}
			if info && p == snapshot.ProtoTCP {
				r.Ext = snapshot.ExtInfo
			}
			out = append(out, r)
		}
	}
	return out
}

// OpError is the error of a failed operation on a Conn.
type OpError struct {
	Op  string // "dump tcp/ipv4", "lookup", "recvfrom", …
	Err error
}

func (e *OpError) Error() string { return "sock_diag " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *OpError) Unwrap() error { return e.Err }

func opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return &OpError{Op: op, Err: err}
}
