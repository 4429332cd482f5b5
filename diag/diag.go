package diag

import (
	"errors"

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

// Requests returns the dumps that cover the given protocols and families,
// asking for tcp_info on TCP when info is true.
func Requests(protos []snapshot.Proto, fams []snapshot.Family, info bool) []Request {
	var out []Request
	for _, p := range protos {
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
