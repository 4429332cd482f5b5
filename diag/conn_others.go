//go:build !linux

package diag

import "github.com/connlogd/connlogd/snapshot"

// Conn is a sock_diag socket; on this platform it cannot be opened.
type Conn struct{}

// Open returns ErrNotSupported: sock_diag is Linux-only.
func Open() (*Conn, error) { return nil, opErr("open", ErrNotSupported) }

// Close does nothing.
func (c *Conn) Close() error { return nil }

// Stats returns zero counts.
func (c *Conn) Stats() snapshot.Stats { return snapshot.Stats{} }

// LastMalformed returns nil.
func (c *Conn) LastMalformed() error { return nil }

// Dump returns ErrNotSupported.
func (c *Conn) Dump(*snapshot.Table, []Request) error { return opErr("dump", ErrNotSupported) }

// DumpEach returns ErrNotSupported.
func (c *Conn) DumpEach(t *snapshot.Table, _ []Request, _ int, _ func(*snapshot.Table) *snapshot.Table) (*snapshot.Table, error) {
	return t, opErr("dump", ErrNotSupported)
}

// Lookup returns ErrNotSupported.
func (c *Conn) Lookup([]snapshot.Key, []snapshot.LookupResult) error {
	return opErr("lookup", ErrNotSupported)
}

// DefaultDestroyBuffer is the receive buffer asked for the destroy
// subscription.
const DefaultDestroyBuffer = 8 << 20

// ErrOverrun reports lost destroy notifications.
var ErrOverrun = errOverrun{}

type errOverrun struct{}

func (errOverrun) Error() string { return "sock_diag destroy: receive buffer overrun" }

// Destroy is a destroy-notification subscription; unsupported here.
type Destroy struct {
	Buffer int
	Forced bool
}

// OpenDestroy returns ErrNotSupported: sock_diag is Linux-only.
func OpenDestroy([]snapshot.Proto, []snapshot.Family, int) (*Destroy, error) {
	return nil, opErr("subscribe", ErrNotSupported)
}

// Stats returns zero counts.
func (d *Destroy) Stats() snapshot.Stats { return snapshot.Stats{} }

// LastMalformed returns nil.
func (d *Destroy) LastMalformed() error { return nil }

// Close does nothing.
func (d *Destroy) Close() error { return nil }

// Drain returns ErrNotSupported.
func (d *Destroy) Drain(*snapshot.Table) (bool, error) {
	return false, opErr("destroy read", ErrNotSupported)
}

// WaitReadable returns ErrNotSupported.
func (d *Destroy) WaitReadable() error { return opErr("destroy wait", ErrNotSupported) }
