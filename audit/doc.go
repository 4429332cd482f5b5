// Package audit names the process behind every connection, however short
// its life, from the kernel's audit subsystem: without eBPF, and alongside
// auditd rather than in its place.
//
// A poll of the socket table sees a socket only if it lives across a poll,
// and /proc names its holder only while the holder lives; a connection
// made by a process that exits within a poll interval (curl, a cron job, a
// reverse shell) has no owner that way. With a syscall rule for connect,
// accept and accept4, the kernel writes at each such call a SYSCALL record
// (pid, uids, comm, exe, result) and a SOCKADDR record (the peer address),
// and multicasts them on NETLINK_AUDIT's read-log group to every reader
// with CAP_AUDIT_READ.
//
// The package has four parts:
//
//   - the records' parser and an Assembler joining the records of one
//     event (same "audit(TIME:SERIAL)" header) into a Call; pure, fuzzed,
//     tested on records captured from a kernel (testdata/);
//   - Rules, which adds connlogd's rules (key "connlogd") with
//     CAP_AUDIT_CONTROL, removes exactly those at Close, removes those a
//     killed run left at start, and puts the enabled flag back as found;
//     it never registers as the audit daemon (AUDIT_SET's pid) nor changes
//     any other setting;
//   - Reader, the read-log subscription, which reports records the kernel
//     dropped on its socket (ENOBUFS) as ErrOverrun;
//   - Joiner, pure, which matches Calls to sockets (see its doc), and
//     holds the events of sockets whose calls may not be read yet;
//   - Source, which ties them together: a goroutine of its own reads the
//     records and, while the calling process may still run, learns its
//     network namespace, the socket its descriptor holds and, when two
//     processes' calls to one peer could tie, that socket's cookie; the
//     caller's goroutine takes the calls and joins them to events.
//
// Without CAP_AUDIT_CONTROL no rules are added, and the records of rules
// already present (an administrator's `-S connect`) are used all the same.
//
// # Cost
//
// Audit rules are off by default in connlogd because any syscall rule
// puts every system call of every process through the kernel's audit
// hooks, not only the calls the rule names; README gives the measured
// overhead. Without auditd, the kernel also prints records to its log
// (rate-limited to a few a second by printk).
//
// The package never logs.
package audit
