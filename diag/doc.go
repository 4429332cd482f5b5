// Package diag talks to the kernel's sock_diag netlink interface
// (NETLINK_SOCK_DIAG): it dumps socket tables into a snapshot.Table and
// looks single sockets up.
//
// # Trust
//
// A Conn is connect()ed to the kernel (nl_pid 0), so the kernel refuses
// unicasts from other processes, and every received datagram is checked
// again here: its sender address (from recvfrom, not the header, which
// anyone can write) must be the kernel, and each message's sequence number
// must be the request's. Anything else is dropped and counted in Stats:
// another root process in the namespace must not be able to inject sockets
// or end a dump early with a forged NLMSG_DONE.
//
// # Cost
//
// Dump replies are received with non-blocking raw recvfrom calls into one
// reused buffer and parsed in place. The kernel produces the next chunk of
// a dump inside our own recvfrom, so the data is almost always there; a
// raw call avoids the Go runtime's syscall hand-off, which costs several
// milliseconds of extra kernel time per 100k-socket poll when each receive
// takes tens of microseconds. Only when a receive would block does Conn
// fall back to a blocking poll(2).
//
// # Platforms
//
// sock_diag exists only on Linux; elsewhere Open returns ErrNotSupported.
package diag
