// Package attribution says who owns each socket: the process holding it
// (pid, comm, exe, user, optionally the command line), the cgroup v2 it
// was created in (path, systemd unit, container id), and its direction
// (listen, inbound, outbound). docs/events.md is the user's view; this is
// the implementation's.
//
// # Use
//
//	r := attribution.New(cfg.Attribution) // one per daemon
//	defer r.Close()
//	tr := r.NewTracker()                  // one per network namespace (per differ)
//	// each poll:
//	tr.Refresh(&tab)                      // after the dump
//	evs, err := d.Diff(&tab, now, conn)
//	tr.Annotate(evs)                      // before writing them
//	// each destroy batch:
//	tr.Annotate(d.Destroyed(batch, now))
//	for _, w := range r.Warnings() { log.Warn(w.Error()) } // each once
//
// A dump read in chunks, each diffed as it comes (as the daemon does), is
// refreshed the same way: BeginRefresh, RefreshChunk before each chunk's
// Step, EndRefresh at the dump's end (false when it failed part way). A
// chunk's new sockets get their owners before its events are annotated.
//
// AnnotateEvent does the same for events handed over one at a time (a
// differ with an Output function). Close a Tracker when its namespace is
// gone, after annotating the namespace's last events.
//
// The package never logs: problems (missing privileges, no cgroup v2
// mount) are Warnings, each kind once. Nothing it does is fatal: without
// /proc or privileges the owner fields are simply absent.
//
// # Cost
//
// A Tracker remembers each socket by cookie, matched against the dump in
// order as package differ does, so a Refresh of an unchanged table costs
// a comparison per socket plus one listing of /proc (to notice exits).
// Descriptor tables are read only for socket inodes not known yet:
//
//   - processes are read in the order of the owner rule (see resolve), and
//     the search stops when every wanted socket has its owner;
//   - on a socket's first look, a process whose descriptor count has not
//     changed since it was last read is skipped (one stat instead of a
//     listing); the second look, one Refresh later, reads every process;
//   - of a process read before, only the links of descriptors not known to
//     hold a live socket are read again: a server with 10,000 connections
//     that accepted one costs a listing of its descriptor table and one
//     link;
//   - a socket nobody is found holding is looked for once more at the next
//     Refresh, then given up on.
//
// The first Refresh reads every descriptor link on the host once, which
// is the floor of what any /proc-based attribution costs (bench/attribution
// measures both).
//
// # Platforms
//
// /proc and cgroupfs code is in _linux.go files. Elsewhere New returns a
// Resolver that adds directions only and warns ErrNotSupported once.
package attribution
