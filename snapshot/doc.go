// Package snapshot models the kernel's socket table as connlogd sees it
// through netlink sock_diag, and parses sock_diag replies into it.
//
// # Model
//
// A [Key] identifies one kernel socket: protocol, family, the
// inet_diag_sockid tuple (addresses, ports, interface) and the socket
// cookie. A [Socket] is a Key plus what a dump says about it (state, uid,
// inode, TCP counters). A [Table] is one dump: a slice of Sockets that is
// reused from poll to poll so that a steady state allocates nothing.
//
// # Parsing
//
// Everything here is pure code over []byte: no syscalls, so it is tested
// and fuzzed without privileges on captured dumps under testdata/. The
// netlink I/O lives in package diag.
//
// # Wire format
//
// The structures are Linux's (include/uapi/linux/inet_diag.h,
// include/uapi/linux/sock_diag.h, include/uapi/linux/tcp.h). They are
// defined here because golang.org/x/sys/unix has no inet_diag types, and
// because the parser must not depend on the platform it is compiled for.
package snapshot
