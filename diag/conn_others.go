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

// Lookup returns ErrNotSupported.
func (c *Conn) Lookup([]snapshot.Key, []snapshot.LookupResult) error {
	return opErr("lookup", ErrNotSupported)
}
