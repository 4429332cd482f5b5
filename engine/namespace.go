package engine

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/snapshot"
)

// namespace is one network namespace's sock_diag sockets and socket
// table: what the loop knows of it between polls.
type namespace struct {
	ns      netns.NS
	conn    Dumper
	reqs    []diag.Request // those the kernel serves, without filter programs
	differ  *differ.Differ
	destroy Subscription // nil when notifications are unavailable
	stop    func()       // stops the destroy waiter
	// sockstat files opened inside the namespace: when they count no TCP
	// socket, the TCP dump, which walks the whole host-wide hash table
	// even for an empty namespace, is skipped.
	sockstat, sockstat6 *os.File
	statBuf             []byte
	// used is the namespace's "sockets: used" count at the last poll.
	used   int
	usedOK bool
	// diffed: the last dump was diffed whole (no dump failed since).
	diffed bool
	// polling: a dump's chunks are being diffed (the differ and the
	// owners are between their Begin and the end); lost: notifications
	// were lost meanwhile. dumping: the dump worker has the namespace's
	// dump in hand, and with it the lock of conn: closeConn says to close
	// conn when it is done.
	polling, lost      bool
	dumping, closeConn bool
	counts, tally      [2][2]int // last poll, this one so far: tcp/udp × ipv4/ipv6
	// sizeHint is how many sockets the probe at open listed, to size the
	// differ and the owners at the first poll; 0 after.
	sizeHint int
	// plan is the namespace's share of the running plan: its requests
	// with the filter's programs. A dump job carries the one it was made
	// with.
	plan *nsPlan
	// owners attributes the namespace's sockets to processes and cgroups.
	owners *attribution.Tracker
	// container is the id of the container the namespace belongs to: that
	// of its first process when the watcher saw it, else that of its
	// first socket with a container's cgroup. Sockets whose cgroup is
	// unknown (those of destroy notifications) are given it through
	// containerOf, which the loop sets. Never set for the host's namespace.
	container   string
	containerOf func(id string) *event.Container
	// output tags, annotates and filters each event of the differ, then
	// writes it.
	output func(*event.Event)

	// drained tells the destroy waiter that the loop has taken what it
	// kept. dmu guards the subscription's reads and what the waiter
	// read (dq, in the kernel's order) and the tables to reuse (dfree);
	// dtake is the loop's list of the batches it took.
	drained   chan struct{}
	dmu       sync.Mutex
	dq        []destroyBatch
	dqSockets int
	dfree     []*snapshot.Table
	dtake     []destroyBatch
	// dread counts the notifications read, by the waiter and by the
	// loop alike, for the waiter's rate; dwait is the gathering it chose
	// for its next round (gatherFor).
	dread uint64
	dwait time.Duration
	// reqsNow are the requests of the dump in flight (activeRequests);
	// lastCost what the last poll took, for the namespace budget.
	reqsNow    []diag.Request
	lastCost   time.Duration
	lastResync time.Time

	failing  bool
	parse    snapshot.Stats
	overruns uint64
	// destroyRead counts the notifications the loop has taken.
	destroyRead uint64
}

// opened is a namespace's kernel handles, opened and probed: by the loop
// itself (openNamespace), or away from it for a namespace the watcher
// reported (openNamespaces), which the loop then builds.
type opened struct {
	ns         netns.NS
	cfg        *config.Config // the configuration it was opened for
	h          handles
	destroyErr error
	reqs       []diag.Request // those the kernel serves, without filter programs
	sockets    int            // how many sockets the probe of reqs listed
	err        error
	// container is the id of the container of the process the namespace
	// was seen in, when the watcher saw one.
	container string
}

// openHandles opens the sock_diag sockets of ns through open and probes
// which requests the kernel serves there. It touches nothing of the
// loop's, so it may run on any goroutine. enter is the path to enter ns
// by, when not ns.Path.
func openHandles(open opener, ns netns.NS, enter string, cfg *config.Config, log *slog.Logger) opened {
	o := opened{ns: ns, cfg: cfg}
	in := ns
	if enter != "" {
		in.Path = enter
	}
	o.h, o.destroyErr, o.err = open(in, cfg)
	if o.err != nil {
		return o
	}
	// Probe without the filter program: usableRequests reads EINVAL as
	// "cannot dump this family", which a bad program must not fake.
	o.reqs, o.sockets, o.err = usableRequests(o.h.Dumper, diag.Requests(cfg.Protocols, cfg.Families, true), log.With("netns", ns.String()))
	return o
}

// closeHandles releases what openHandles opened, when no namespace took it.
func (o *opened) closeHandles() {
	if o.h.Destroy != nil {
		_ = o.h.Destroy.Close()
	}
	if o.h.Dumper != nil {
		_ = o.h.Dumper.Close()
	}
	for _, f := range []*os.File{o.h.Sockstat, o.h.Sockstat6} {
		if f != nil {
			f.Close()
		}
	}
}

// openNamespace opens the sock_diag sockets of ns through the loop's
// opener and builds its namespace.
func (d *loop) openNamespace(ns netns.NS) (*namespace, error) {
	return d.build(openHandles(d.open, ns, "", d.plan.Config, d.log))
}

// build makes the namespace of what openHandles opened. Its differ hands
// each event, as it is found, to output: tagged with the namespace,
// annotated and judged by the running plan's owner rules, then written.
// Handles opened for a configuration reloaded since are opened again.
func (d *loop) build(o opened) (*namespace, error) {
	if o.err == nil && o.cfg != d.plan.Config {
		o.closeHandles()
		c := o.container
		o = openHandles(d.open, o.ns, "", d.plan.Config, d.log)
		o.container = c
	}
	if o.err != nil {
		o.closeHandles()
		return nil, o.err
	}
	cfg, ns, h := d.plan.Config, o.ns, o.h
	w := &namespace{ns: ns, statBuf: make([]byte, 512), owners: d.owners.NewTracker()}
	w.output = func(ev *event.Event) {
		w.tag(ev)
		if d.audit == nil {
			if d.plan.admit(w.owners, ev) {
				w.nameContainer(ev)
				d.write(ev)
			}
			return
		}
		w.owners.AnnotateEvent(ev)
		w.nameContainer(ev)
		if !d.auditHold(ev) { // held: written once its owner is known
			d.finishEvent(ev)
		}
	}
	w.differ = differ.New(differ.Options{States: d.plan.States, Output: w.output, UpdateInterval: cfg.FlowUpdateInterval, Clock: d.clock.Now})
	w.conn, w.destroy, w.sockstat, w.sockstat6 = h.Dumper, h.Destroy, h.Sockstat, h.Sockstat6
	w.reqs, w.sizeHint = o.reqs, o.sockets
	w.plan = d.plan.forNamespace(o.reqs)
	d.setContainer(w, o.container)
	switch {
	case !cfg.Destroy.Enabled:
	case o.destroyErr != nil:
		d.log.Warn("destroy notifications unavailable; closes come from polls only, and connections shorter than the interval are missed",
			"netns", ns.String(), "err", o.destroyErr)
	default:
		if w.destroy == nil {
			break
		}
		if !h.DestroyForced && h.DestroyBuffer < cfg.Destroy.Buffer {
			d.log.Warn("destroy notification buffer smaller than asked (no CAP_NET_ADMIN, net.core.rmem_max too low); bursts of closes may overrun it",
				"netns", ns.String(), "asked", cfg.Destroy.Buffer, "granted", h.DestroyBuffer)
		}
		w.stop = w.waitDestroy(d.ready, d.clock.Now)
		w.differ.SetDestroy(true)
	}
	return w, nil
}

// waitDestroy runs a goroutine that reads the destroy notifications as
// they come, stamps each batch when its read returned, keeps the batches
// for the loop (destroyBatches) and tells it. A close is stamped when it
// was read, so a loop busy elsewhere (a scan of /proc on a loaded
// machine takes seconds) must not delay the read: a late stamp widens
// the time a connection may have been made in, and audit attribution
// then finds the calls of several processes where one fits. The loop
// takes the batches kept, then reads what is still queued itself, under
// the same lock: before diffing a dump it has every notification queued
// while the dump ran, so that the TIME_WAIT remnant of a connection it
// reports as short-lived is known for what it is. The goroutine keeps
// at most maxKeptSockets sockets; past them the kernel's queue holds
// the rest until the loop has taken them. The returned function stops
// it.
func (w *namespace) waitDestroy(ready chan<- *namespace, now func() time.Time) func() {
	w.drained = make(chan struct{}, 1)
	kick := make(chan struct{}, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	sub := w.destroy
	go func() {
		// Tells the loop, without holding up the reads.
		for {
			select {
			case <-kick:
			case <-quit:
				return
			}
			select {
			case ready <- w:
			case <-quit:
				return
			}
		}
	}()
	go func() {
		defer close(done)
		gather := time.NewTimer(time.Hour)
		gather.Stop()
		wait := destroyGather
		var lastRead uint64  // w.dread after the last round
		var lastAt time.Time // when the last round read
		// tell wakes the loop, or has the teller wake it.
		tell := func() {
			select {
			case ready <- w: // the loop was waiting
			default:
				select {
				case kick <- struct{}{}:
				default: // the loop has a wake-up pending
				}
			}
		}
		for {
			if err := sub.WaitReadable(); err != nil {
				select {
				case <-quit:
					return // stopped
				default:
				}
				// The wait failed: the loop takes it as a failed read,
				// says so with a gap, and stops the subscription.
				w.dmu.Lock()
				w.dq = append(w.dq, destroyBatch{tab: w.table(), at: now(), err: err})
				w.dmu.Unlock()
				tell()
				return
			}
			// Let the closes of the next moment queue too: the loop then
			// takes them in one go, with one flush of the sinks, instead
			// of waking per close (measured at 2,000 connections a second,
			// half the daemon's CPU went to wake-ups and flushes).
			gather.Reset(wait)
			select {
			case <-gather.C:
			case <-quit:
				return
			}
			w.dmu.Lock()
			select {
			case <-quit: // closed while this waited for the lock
				w.dmu.Unlock()
				return
			default:
			}
			var at time.Time
			for !w.keptFull() {
				b := w.readBatch(sub, now)
				w.dq = append(w.dq, b)
				w.dqSockets += b.tab.Len()
				at = b.at
				if !b.full || (b.err != nil && !errors.Is(b.err, diag.ErrOverrun)) {
					break
				}
			}
			if !at.IsZero() {
				// What came since the last round, the loop's reads too.
				if !lastAt.IsZero() {
					wait = gatherFor(w.dread-lastRead, at.Sub(lastAt))
				}
				lastRead, lastAt = w.dread, at
				w.dwait = wait
			}
			full := w.keptFull()
			failed := len(w.dq) > 0 && w.dq[len(w.dq)-1].err != nil && !errors.Is(w.dq[len(w.dq)-1].err, diag.ErrOverrun)
			w.dmu.Unlock()
			tell()
			if failed {
				return // the loop stops the subscription
			}
			if full {
				// The rest waits in the kernel's queue until the loop has
				// taken these.
				select {
				case <-w.drained:
				case <-quit:
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			// Not while the waiter reads: its reads do not go through
			// the runtime's poller, and the descriptor could be reused.
			w.dmu.Lock()
			sub.Close()
			w.dmu.Unlock()
			<-done
		})
	}
}

// maxKeptSockets and maxKeptBatches bound what a destroy waiter keeps for
// the loop: as many closes as the loop takes in one drain, in as many
// reads as a stall of seconds makes at a few closes a read.
const (
	maxKeptSockets = maxDrainBatches * 1024
	maxKeptBatches = 4096
)

// keptFull reports whether the waiter keeps all it may, with w.dmu held.
func (w *namespace) keptFull() bool {
	return w.dqSockets >= maxKeptSockets || len(w.dq) >= maxKeptBatches
}

// oldestKept returns the stamp of the oldest batch the waiter keeps.
func (w *namespace) oldestKept() (time.Time, bool) {
	w.dmu.Lock()
	defer w.dmu.Unlock()
	if len(w.dq) == 0 {
		return time.Time{}, false
	}
	return w.dq[0].at, true
}

// destroyBatch is one read of a destroy subscription.
type destroyBatch struct {
	tab  *snapshot.Table
	at   time.Time // when the read returned
	full bool
	err  error
}

// table returns an empty table for a batch, with w.dmu held.
func (w *namespace) table() *snapshot.Table {
	if n := len(w.dfree); n > 0 {
		t := w.dfree[n-1]
		w.dfree = w.dfree[:n-1]
		t.Reset()
		return t
	}
	return new(snapshot.Table)
}

// readBatch reads one batch of sub, with w.dmu held.
func (w *namespace) readBatch(sub Subscription, now func() time.Time) destroyBatch {
	t := w.table()
	full, err := sub.Drain(t)
	w.dread += uint64(t.Len())
	return destroyBatch{tab: t, at: now(), full: full, err: err}
}

// destroyBatches returns the batches the waiter kept, then up to reads
// (0: none, unless none were kept) more read from the subscription now,
// in the kernel's order; the loop
// hands each table back (recycle) once it is done with it.
func (w *namespace) destroyBatches(reads int, now func() time.Time) []destroyBatch {
	w.dmu.Lock()
	defer w.dmu.Unlock()
	if len(w.dq) == 0 {
		reads = maxDrainBatches // nothing kept: read what is queued
	}
	out := append(w.dtake[:0], w.dq...)
	clear(w.dq)
	w.dq = w.dq[:0]
	w.dqSockets = 0
	for range reads {
		if n := len(out); n > 0 && out[n-1].err != nil && !errors.Is(out[n-1].err, diag.ErrOverrun) {
			break // the subscription failed: nothing more to read
		}
		b := w.readBatch(w.destroy, now)
		out = append(out, b)
		if !b.full && b.err == nil {
			break
		}
	}
	w.dtake = out
	return out
}

// recycle keeps a batch's table for the next reads.
func (w *namespace) recycle(t *snapshot.Table) {
	w.dmu.Lock()
	if len(w.dfree) < maxDrainBatches && t.Len() <= 1024 {
		w.dfree = append(w.dfree, t)
	}
	w.dmu.Unlock()
}

// How long a destroy waiter lets notifications gather before it reads
// them and wakes the loop: a bound on the wake-ups per namespace, and
// what it adds to a close's latency and to its stamp (taken at the read,
// so a busy host's closes are stamped up to the long time after they
// were sent, which audit attribution's time windows allow for). While
// notifications come slower than gatherBusyRate a second (that many
// connections closing with a remote peer, half as many on loopback,
// where both ends are notified), the short time, so that closes are
// logged within milliseconds; faster, the long one. Each wake-up costs
// far more than the notifications it brings (thread hand-offs, a flush
// of the sinks): with 12,000-13,000 loopback connections a second, both
// settings watching the same connections (bench/churn/dual.sh), waiting
// 5 ms took 0.82-0.83 of the CPU per connection of waiting 2 ms, and
// 10 ms 0.88 of 5 ms, for 3-5 ms more median latency.
const (
	destroyGather     = 2 * time.Millisecond
	destroyGatherBusy = 10 * time.Millisecond
	gatherBusyRate    = 3000
)

// gatherFor is how long to gather after n notifications were read in
// elapsed.
func gatherFor(n uint64, elapsed time.Duration) time.Duration {
	n = min(n, 1<<33) // n × 10⁹ stays within 64 bits
	if n > 0 && elapsed <= time.Duration(n*uint64(time.Second)/gatherBusyRate) {
		return destroyGatherBusy
	}
	return destroyGather
}

// close releases every socket of the namespace: an open socket would pin
// a namespace that is otherwise gone.
func (w *namespace) close() {
	if w.owners != nil {
		w.owners.Close()
	}
	if w.stop != nil {
		w.stop()
	} else if w.destroy != nil {
		_ = w.destroy.Close()
	}
	// A dump in flight holds conn until the loop takes its chunks:
	// closed then (dumped), not here, where the loop would wait for it.
	if w.conn != nil && w.dumping {
		w.closeConn = true
	} else if w.conn != nil {
		_ = w.conn.Close() // nothing to do about it; the namespace is done
	}
	for _, f := range []*os.File{w.sockstat, w.sockstat6} {
		if f != nil {
			f.Close()
		}
	}
}

// tag stamps an event with the namespace it happened in.
func (w *namespace) tag(ev *event.Event) {
	ev.Netns = w.ns.ID.Ino
	ev.NetnsName = w.ns.Name
}

// activeRequests returns the dumps worth making now. A TCP dump walks the
// host-wide hash even for an empty namespace, so it is left out when
// nothing of the family could be in it: sockstat counts no hashed TCP
// socket of the family and no TIME_WAIT remnant, the last dump found
// none, and the namespace's socket count ("sockets: used") has not moved
// since the last poll. The last two matter because a socket that is only
// bound is in no count of the TCP line, yet dumps return it: without
// them its namespace's last listener going would make it look closed.
func (w *namespace) activeRequests(buf []diag.Request, reqs []diag.Request) []diag.Request {
	b4 := w.readStat(w.sockstat)
	in4, tw, ok4 := netns.ParseSockstat(b4, "TCP:")
	used, okUsed := netns.ParseSockstatUsed(b4)
	quiet := okUsed && w.usedOK && used == w.used
	w.used, w.usedOK = used, okUsed
	in6, _, ok6 := netns.ParseSockstat(w.readStat(w.sockstat6), "TCP6:")
	empty4, empty6 := ok4 && in4 == 0, ok6 && in6 == 0
	if !quiet || !ok4 || tw != 0 || !w.diffed || (!empty4 && !empty6) {
		return append(buf, reqs...)
	}
	// With a family counted empty, the last dump must have found none.
	had4, had6 := w.counts[0][0] > 0, w.counts[0][1] > 0
	empty4, empty6 = empty4 && !had4, empty6 && !had6
	for _, r := range reqs {
		// TIME_WAIT sockets of both families are counted together, in
		// the TCP: line's tw.
		if r.Proto == snapshot.ProtoTCP &&
			((r.Family == snapshot.FamilyIPv4 && empty4) || (r.Family == snapshot.FamilyIPv6 && empty6) ||
				(r.Family == snapshot.FamilyAny && empty4 && empty6)) {
			continue
		}
		buf = append(buf, r)
	}
	return buf
}

// leaveOutTimeWait takes TIME_WAIT sockets out of the state masks of
// reqs when destroy notifications work, and reports whether it did. A
// TIME_WAIT socket is the after-life of a connection whose close its
// notification reported: the kernel destroys the full socket as it enters
// TIME_WAIT. On a busy server they are most of the table (a minute of
// connections), and a dump that asks for them makes the kernel build, and
// the loop parse and compare, a message for each, every poll. They stay
// asked for where the dump is the only witness of closes: without
// notifications, and when the configured states name time_wait.
//
// After notifications were lost too they stay out: a dump listing a
// minute of remnants could not tell those of the connections reported
// before the loss from those whose notification was lost, and would
// report the former a second time (measured: 9 % of the connections of
// a 5-minute pass after one overrun). The loss is reported as a gap; a
// tracked connection whose close was lost is found by the lookup of the
// next poll (differ: LookupTimeWait).
func (w *namespace) leaveOutTimeWait(reqs []diag.Request) bool {
	if w.destroy == nil || w.plan.dumpTimeWait {
		return false
	}
	for i := range reqs {
		if reqs[i].Proto == snapshot.ProtoTCP {
			reqs[i].States &^= 1 << snapshot.StateTimeWait
		}
	}
	return true
}

// readStat reads a sockstat file into statBuf, which the next read
// overwrites; nil when it cannot.
func (w *namespace) readStat(f *os.File) []byte {
	if f == nil {
		return nil
	}
	m, err := f.ReadAt(w.statBuf, 0)
	if m == 0 || (err != nil && m == len(w.statBuf)) {
		return nil
	}
	return w.statBuf[:m]
}

func (w *namespace) String() string { return w.ns.String() }

// countSockets adds a chunk's sockets, by protocol and family, to the
// dump's tally, for the metrics and activeRequests. A socket the kernel
// listed twice counts twice: the figure is a gauge.
func (w *namespace) countSockets(t *snapshot.Table) {
	for i := range t.Sockets {
		s := &t.Sockets[i]
		p, f := 0, 0
		if s.Proto == snapshot.ProtoUDP {
			p = 1
		}
		if s.Family == snapshot.FamilyIPv6 {
			f = 1
		}
		w.tally[p][f]++
	}
}

// abortPoll ends the diff of a dump whose chunks will not all come (it
// failed, or the namespace is replaced or gone): the sockets no chunk
// listed are not suspects.
func (w *namespace) abortPoll() {
	if !w.polling {
		return
	}
	w.polling = false
	w.differ.Abort()
	w.owners.EndRefresh(false)
}
