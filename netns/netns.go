// Package netns finds the host's network namespaces and runs code inside
// them, so one daemon can open sock_diag sockets in every namespace.
//
// A socket belongs to the namespace it was created in for its whole life,
// so entering a namespace is needed only to create sockets: Do runs a
// function on a locked OS thread that has joined the namespace, then
// returns the thread to the daemon's own namespace.
package netns

import (
	"errors"
	"strconv"
)

// ErrNotSupported is returned where network namespaces do not exist.
var ErrNotSupported = errors.New("netns: not supported on this platform")

// ID identifies a namespace: the device and inode of its nsfs file.
type ID struct {
	Dev uint64
	Ino uint64
}

// NS is one network namespace.
type NS struct {
	ID ID
	// Name is its /run/netns name (`ip netns`), empty when it has none.
	Name string
	// Path is a file that refers to it: /run/netns/NAME or
	// /proc/PID/ns/net.
	Path string
	// Host marks the daemon's own namespace.
	Host bool
}

func (n NS) String() string {
	if n.Name != "" {
		return n.Name
	}
	if n.Host {
		return "host"
	}
	return "netns:" + strconv.FormatUint(n.ID.Ino, 10)
}
