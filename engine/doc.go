// Package engine is connlogd's poll loop: it watches network namespaces,
// polls their socket tables, reads their destroy notifications, diffs,
// and writes the events to the sinks. Run is the daemon; Snapshot is
// `connlogd -once`. Package main only wires flags, signals, systemd and
// the metrics endpoint to it.
//
// # One goroutine
//
// Everything that touches a socket table or the sinks runs on Run's
// goroutine, one select over its inputs: the poll ticker, the dump
// worker's results, the destroy waiters, the namespace rescan, reloads
// and reopens. Nothing needs a lock, and the order of events is the
// order the loop saw things in. Two kinds of helper goroutines only wait:
// the dump worker runs one dump at a time (a large table takes 100 ms and
// more in the kernel, during which the loop keeps logging closes), and
// one waiter per namespace tells the loop that destroy notifications are
// queued, then waits until the loop has read them. A new source of events
// (an audit reader, a namespace watcher) is one more such waiter and one
// more case in Run's select; Options.Rescan is that case for a namespace
// watcher.
//
// # Rounds
//
// Each tick starts a round: the host's namespace and, within a budget of
// a fifth of the interval judged by what their last polls cost, the
// other namespaces round-robin (planRound, a pure function).
//
// # Time stamps
//
// Every event's time is when the loop learnt of the change, read from the
// loop's Clock after whatever told it, never before: the events of a
// dump's chunk when its reading ended (the worker reads the clock then),
// closes its
// lookups confirm when they answered (the differ's Clock), each batch of
// destroy notifications when its read returned, a vanished namespace's
// closes when the listing that missed it was done. A time read earlier (a
// round's start, a drain's start) could precede a change that happened
// while the dump, lookup or read ran.
//
// # Latency
//
// A dump runs on the worker, which hands it to the loop in chunks
// (DumpChunk sockets) as it reads them; the loop diffs each chunk as it
// comes, so the table is never held whole and a large one does not hold
// closes back. Before a chunk is diffed, the loop takes every destroy
// notification queued by the time the chunk was read (the waiter's
// batches, then a read of the queue): a socket the chunk lists although
// it was destroyed meanwhile, or its TIME_WAIT remnant, is then known for
// what it is. At the dump's end the differ sweeps the tracked sockets no
// chunk listed, whose closes it confirms by lookup. Where
// notifications work, dumps leave out TIME_WAIT sockets
// (leaveOutTimeWait): their closes were reported as they entered
// TIME_WAIT, and on a busy server they are most of the table.
//
// # Plans
//
// A configuration becomes a Plan (filter, state mask, generation) once,
// when loaded. Each namespace holds its share of the running plan (its
// requests with the filter's programs), and each dump carries the share
// it was made with. A reload builds the new plan and sinks first, refuses
// the file when either fails, then swaps them in, forgets the sockets the
// new filter excludes, and reopens namespaces whose protocols, families
// or destroy settings changed. A dump in flight across a reload was
// filtered by the kernel with the old plan; the loop filters its result
// with the new one, so forgotten sockets do not come back.
//
// # Seams
//
// The loop reaches the kernel through an opener (Dumper, Subscription
// and the sockstat files of a namespace) and a discoverer (which
// namespaces exist), the sinks through Output, and the time through
// Clock. Tests replace all of them and drive the loop without privilege.
package engine
