// Package differ turns consecutive socket tables into events. It is pure
// logic: no syscalls and no logging, so every rule is tested with tables.
//
// # Identity
//
// A socket is its snapshot.Key: protocol, family, addresses, ports,
// interface and cookie. The cookie is unique per socket for the life of
// the system, so the tracker indexes by cookie and checks the whole key.
//
// # Closes are confirmed
//
// The kernel resumes a dump by hash bucket and position, so under churn a
// live socket can be skipped by one dump (and another returned twice).
// A socket missing from a dump is therefore only a suspect: the caller's
// Prober looks it up by exact match, and it is reported closed only when
// the kernel says it no longer exists (ENOENT, or ESTALE for a connected
// TCP socket whose tuple another socket now owns). When the lookup cannot
// answer, or cannot see the socket (a TCP socket in state close is in no
// hash it searches), the socket must be missing from MissLimit
// consecutive dumps. A socket whose close a destroy notification already
// reported is not looked up when a dump misses it: it is forgotten.
//
// # Time
//
// Diff's now is when the dump ended: what it shows was true by then. The
// closes its lookups confirm are stamped by Options.Clock once they have
// answered, and Destroyed's events with the time the caller read them:
// no event carries a time before its change.
//
// # Steps
//
// Diff is Begin, Step and Finish. A caller that reads a large dump in
// chunks hands each to Step as it is read, so that no whole table is
// ever held, and Finish sweeps the sockets no chunk listed; it hands the
// destroy notifications queued before a chunk was read to Destroyed
// before that chunk's Step. A dump listed in chunks may list a socket
// twice: it is compared once.
//
// # Cost in memory
//
// A tracked socket is a 160-byte record without pointers (the socket's
// fields, addresses as 16 bytes) and 4-byte entries in the cookie index
// and the dump-order slices: 179 B a socket in all (BenchmarkMemory).
//
// # Failed attempts
//
// A TCP connection attempt that never reached established is reported
// closed with a Failure, from what sock_diag shows:
//
//   - Outbound: the destroy notification's tcp_info of a socket no poll
//     saw established says whether its handshake ever completed: a
//     completed one leaves a round-trip time (tcpi_rtt, sampled from the
//     SYN-ACK or the handshake's last ACK) and, on the client, the SYN
//     acknowledged (tcpi_bytes_acked), while an attempt that sent its SYN
//     (tcpi_segs_out) has neither. For such an attempt, an answer
//     (tcpi_segs_in) means a reset, Refused; no answer after
//     retransmissions (tcpi_total_retrans), Timeout; neither, an attempt
//     the kernel or the application ended before a retransmission (an
//     ICMP error, a cancelled connect), Unknown. An abortive close
//     (SO_LINGER 0) zeroes every counter, the segments sent included, and
//     the peer's address: it is no failed attempt. The socket's state is no
//     help: it is close in every destroy notification, which the kernel
//     sends when it frees the socket. A close found by polls alone proves
//     nothing, as the connection may have been established and ended
//     between two polls: it gets no Failure. A failed connect leaves the
//     kernel's tables at once but is freed, and notified, only when the
//     application closes it, so with Options.Destroy an attempt a lookup
//     says is gone waits up to AttemptWait for its notification.
//   - Inbound: a request socket (syn_recv) is replaced by its connection's
//     socket, under the same tuple, when the handshake completes. One
//     that the exact lookup says is gone (ENOENT; ESTALE means a socket
//     holds its tuple, the completed connection) whose tuple no tracked
//     socket and no recent destroy notification has is a handshake the
//     client never completed (a scan, a SYN flood, a client that gave
//     up): Unknown. This needs the destroy notifications
//     (Options.Destroy): without them a completed connection that ended
//     between two polls leaves no trace, and no Failure is given.
//
// # Flow updates
//
// With Options.UpdateInterval, each connection (a TCP socket past its
// handshake and before TIME_WAIT, a connected UDP socket) that a poll
// finds alive that long after its last event gets an Updated event with
// the poll's record: its cumulative counters and its duration so far.
//
// # Cost
//
// Dumps come back in the same order from poll to poll, so the tracker
// first compares each socket with the one that followed its predecessor
// last time, and only probes the cookie index when that guess fails. A
// steady table costs one key comparison per socket and no allocation.
package differ

import (
	"hash/maphash"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/slotidx"
	"github.com/connlogd/connlogd/snapshot"
)

// Prober answers whether sockets missing from a dump still exist.
type Prober interface {
	Lookup(keys []snapshot.Key, out []snapshot.LookupResult) error
}

// Options tune a Differ.
type Options struct {
	// MissLimit is how many consecutive dumps must miss a socket before it
	// is reported closed when lookups cannot decide. Default 3.
	MissLimit int
	// States, when non-zero, is a mask (1<<state) of the states whose
	// events are reported; the table is tracked whole either way.
	States uint32
	// Output, when set, receives each event as it is found, and the
	// methods return no slice: the start-up table (one event per socket)
	// then never exists in memory as a whole. The event is valid only
	// during the call.
	Output func(*event.Event)
	// UpdateInterval, when positive, is the flow update interval (see
	// "Flow updates"); 0 turns updates off.
	UpdateInterval time.Duration
	// Destroy says the caller feeds Destroyed every destroy notification
	// of the protocols it dumps, so that a close without one proves an
	// inbound handshake failed (see "Failed attempts").
	Destroy bool
	// Clock, when set, is read once the lookups of a diff have answered:
	// the closes they confirm are stamped with it, not with the diff's
	// time. A socket a dump skipped may have been alive until just before
	// the lookup, so the dump's time could precede its close. Unset, those
	// closes take the diff's time (tests, and callers without lookups).
	Clock func() time.Time
}

// Stats are cumulative counters of the differ's work.
type Stats struct {
	Duplicates   uint64 // sockets a dump returned more than once
	Skipped      uint64 // missing sockets a lookup found alive
	Unconfirmed  uint64 // missing sockets a lookup could not decide
	LookupErrors uint64 // failed Prober calls
}

// conn is a tracked socket: its record (whose tail also holds the
// differ's small per-socket fields: misses, phase, flags) and when it was
// first seen and last reported. 160 bytes, no pointer.
type conn struct {
	rec       record
	firstSeen int64 // unix ns
	// lastEvent is when the socket's last event was reported (unix ns;
	// 0: not yet counted), for flow updates.
	lastEvent int64
	gen       uint32
	pos       int32 // index in Differ.order, or -1 while pending
}

// connFlags are a conn's flags, in record.flags.
type connFlags uint8

const (
	// fUsed: the slot holds a tracked socket.
	fUsed connFlags = 1 << iota
	// fSilent: its close was already reported from a destroy
	// notification; what remains (a TIME_WAIT remnant) is tracked without
	// events.
	fSilent
	// fHeld: a TIME_WAIT socket no poll had seen, not announced yet (see
	// Diff).
	fHeld
	// fAfterlife: a TIME_WAIT remnant no poll had seen, tracked silently
	// because dumps leave TIME_WAIT out: its connection is reported by
	// its notification, which Destroyed still reports should it carry the
	// remnant's cookie.
	fAfterlife
	// fRestored: restored from the previous run's table and listed by no
	// dump since; its close, whenever a poll confirms it, happened while
	// connlogd was not running (Event.Late), also when the confirmation
	// takes more than the first poll (a lookup that could not answer).
	fRestored
)

func (c *conn) used() bool      { return c.rec.flags&fUsed != 0 }
func (c *conn) silent() bool    { return c.rec.flags&fSilent != 0 }
func (c *conn) held() bool      { return c.rec.flags&fHeld != 0 }
func (c *conn) afterlife() bool { return c.rec.flags&fAfterlife != 0 }

// set sets or clears f.
func (c *conn) set(f connFlags, on bool) {
	if on {
		c.rec.flags |= f
	} else {
		c.rec.flags &^= f
	}
}

// AttemptWait is how long a connection attempt (syn_sent) that left the
// kernel's tables waits for its destroy notification before it is
// reported closed without one, when destroy notifications are on.
const AttemptWait = 10 * time.Second

// lateDestroyWindow is how long a poll-found close remembers its cookie,
// so that a late destroy notification does not report it again.
const lateDestroyWindow = time.Minute

// phase is the progress of a TCP connection's handshake.
type phase uint8

const (
	phaseNone        phase = iota // not an attempt: a listener, a bound socket, UDP
	phaseOut                      // first seen sending its SYN (syn_sent)
	phaseIn                       // first seen answering a SYN (syn_recv)
	phaseEstablished              // seen past the handshake
)

// next returns the phase after a poll found s.
func (p phase) next(s *snapshot.Socket) phase {
	if s.Proto != snapshot.ProtoTCP {
		return phaseNone
	}
	switch s.State {
	case snapshot.StateSynSent:
		if p == phaseNone {
			return phaseOut
		}
	case snapshot.StateSynRecv:
		if p == phaseNone {
			return phaseIn
		}
	case snapshot.StateEstablished, snapshot.StateFinWait1, snapshot.StateFinWait2, snapshot.StateCloseWait,
		snapshot.StateClosing, snapshot.StateLastAck, snapshot.StateTimeWait:
		return phaseEstablished
	}
	return p
}

// Differ tracks the socket table across polls. It is not safe for
// concurrent use.
type Differ struct {
	opts     Options
	conns    []conn
	free     []int32
	byCookie slotidx.Index // slots by cookie (see cookieOf)
	cookieOf func(int32) uint64
	order    []int32 // slots in the order of the last dump
	next     []int32
	pending  []int32 // suspects a lookup found alive or could not decide
	pend2    []int32
	gen      uint32
	started  bool
	late     bool // the next Diff follows a Restore
	stats    Stats
	// noTimeWait: the dumps leave TIME_WAIT sockets out (SetTimeWaitDumped).
	noTimeWait bool

	// The diff under way, between Begin and Finish.
	inDiff   bool
	now      time.Time
	cur      int // where in order the next guess is
	matched  int
	initial  bool
	diffLate bool

	// Destroyed sockets no poll had seen, by cookie and (for TCP, whose
	// TIME_WAIT remnant of a never-dumped socket gets a new cookie) by
	// tuple. A dump that raced with the destroy, or the remnant, must not
	// make them appear again. Kept until the third Begin after: by then
	// no dump that started before the destroy is still to come.
	// deadFlows holds the tuples by flowHash: a remnant is matched to its
	// connection's flow, not minding the interface (the same flow on two
	// devices, with VRFs or SO_BINDTODEVICE, would only keep one's
	// remnant from being announced: a remnant is never a connection of
	// its own, and its connection's notification reports it), and 8-byte
	// keys keep the sets small enough for the processor's cache at tens
	// of thousands of closes a second, where a map of 44-byte tuples
	// missed it at every insertion (5 % of the daemon's CPU).
	deadCookies cookieSet
	deadFlows   deadSet[uint64]
	flowSeed    maphash.Seed
	// closedCookies are sockets a poll reported closed before their
	// destroy notification came (the kernel unhashes a socket when its
	// connection ends, and frees it, which sends the notification, when
	// the application closes it): by cookie, until when a late
	// notification is recognised (unix ns). Without it the notification
	// would report them again, as short-lived sockets.
	closedCookies map[uint64]int64
	nowNs         int64 // the time of the last Diff
	// heldTuples indexes the held sockets by tuple.
	heldTuples map[tupleKey]int32
	// goneAt is when a lookup first said a connection attempt was gone
	// (unix ns), by cookie, while it waits for its notification: few
	// sockets ever are, so not a field of each.
	goneAt map[uint64]int64

	ev       event.Event // the event being emitted
	suspects []int32
	keys     []snapshot.Key
	results  []snapshot.LookupResult
	events   []event.Event
}

// New returns an empty Differ.
func New(opts Options) *Differ {
	if opts.MissLimit <= 0 {
		opts.MissLimit = 3
	}
	d := &Differ{
		opts:          opts,
		deadCookies:   cookieSet{deadSet: newDeadSet[uint64]()},
		closedCookies: make(map[uint64]int64),
		deadFlows:     newDeadSet[uint64](),
		flowSeed:      maphash.MakeSeed(),
		heldTuples:    make(map[tupleKey]int32),
		goneAt:        make(map[uint64]int64),
	}
	d.cookieOf = func(slot int32) uint64 { return d.conns[slot].rec.cookie }
	return d
}

// Stats returns the cumulative counters.
func (d *Differ) Stats() Stats { return d.stats }

// Len returns the number of sockets tracked.
func (d *Differ) Len() int { return d.byCookie.Len() }

// Diff compares t with what the Differ knows and returns the events, in
// the order: appeared and state_changed in dump order, then closed. now
// is when the dump that made t ended: what it shows was true by then.
// The slice is reused by the next call. p may be nil when lookups are
// impossible. A Prober error is returned after the events were computed
// without it; the events are valid either way. Diff is Begin, one Step
// with the whole table, then Finish.
func (d *Differ) Diff(t *snapshot.Table, now time.Time, p Prober) ([]event.Event, error) {
	d.Begin()
	d.Step(t, now)
	return d.Finish(now, p)
}

// Begin starts the diff of a dump that comes in chunks: each is handed to
// Step as it is read, and Finish, once the dump has ended, sweeps the
// tracked sockets no chunk listed. The dump is never held whole. Between
// the steps the caller may hand the Differ destroy notifications
// (Destroyed), and must hand it every notification queued before a chunk
// was read before that chunk's Step, so that a socket the chunk lists but
// that was destroyed meanwhile (or its TIME_WAIT remnant) is known for
// what it is. Forget is allowed between the steps too; Abort ends a diff
// whose dump failed. Nothing else may be called until Finish or Abort.
func (d *Differ) Begin() {
	d.gen++
	d.deadCookies.rotate()
	d.deadFlows.rotate()
	d.resetEvents()
	d.next = d.next[:0]
	d.initial = !d.started
	d.started = true
	d.diffLate = d.late
	d.late = false
	d.inDiff = true
	d.cur, d.matched = 0, 0
}

// Step compares the sockets of t, one chunk of the dump Begin started,
// read whole by now: its events are stamped now, what it shows was true
// by then. A socket listed twice, in one chunk or in two, is compared
// once. t is not kept.
func (d *Differ) Step(t *snapshot.Table, now time.Time) {
	initial, late := d.initial, d.diffLate
	nowNs := now.UnixNano()
	d.nowNs = nowNs
	if len(d.conns) == 0 && len(t.Sockets) > cap(d.conns) {
		// Size the tracker from the first chunk instead of growing it
		// socket by socket; Finish trims what the first dump left unused.
		d.Reserve(len(t.Sockets))
	}
	cur, matched := d.cur, d.matched
	for i := range t.Sockets {
		s := &t.Sockets[i]
		slot := int32(-1)
		if cur < len(d.order) {
			if c := &d.conns[d.order[cur]]; c.rec.sameKey(&s.Key) {
				slot = d.order[cur]
				cur++
			}
		}
		if slot < 0 {
			if j, ok := d.byCookie.Get(s.Cookie, d.cookieOf); ok {
				c := &d.conns[j]
				if c.rec.sameKey(&s.Key) {
					slot = j
					if c.pos >= 0 && c.gen != d.gen {
						cur = int(c.pos) + 1
					}
				} else if c.gen == d.gen {
					// This dump listed the socket already, under its other
					// tuple (the kernel walks its hashes one after the
					// other while the socket moves): one socket, one record.
					d.stats.Duplicates++
					continue
				} else {
					// Same socket, new tuple (e.g. a UDP socket that
					// connected): under a tuple key that is a close of the
					// old identity and the appearance of a new one.
					d.closeSlot(j, now, event.ReasonGone)
				}
			}
		}
		if slot >= 0 {
			c := &d.conns[slot]
			if c.gen == d.gen {
				d.stats.Duplicates++
				continue
			}
			if c.pos >= 0 {
				matched++
			}
			c.gen = d.gen
			c.rec.misses = 0
			c.set(fRestored, false)
			switch {
			case c.held():
				d.unhold(slot)
				d.emitNew(event.Event{Kind: event.Appeared, Time: now, Socket: *s, FirstSeen: time.Unix(0, c.firstSeen)})
				c.lastEvent = nowNs
			case c.silent():
			case c.rec.state != s.State:
				d.emitNew(event.Event{Kind: event.StateChanged, Time: now, Socket: *s, PrevState: c.rec.state, FirstSeen: time.Unix(0, c.firstSeen)})
				c.lastEvent = nowNs
			case d.opts.UpdateInterval > 0 && flowing(s):
				if c.lastEvent == 0 {
					c.lastEvent = nowNs // restored: count from now
				} else if nowNs-c.lastEvent >= int64(d.opts.UpdateInterval) {
					d.emitNew(event.Event{Kind: event.Updated, Time: now, Socket: *s, FirstSeen: time.Unix(0, c.firstSeen)})
					c.lastEvent = nowNs
				}
			}
			c.rec.phase = c.rec.phase.next(s)
			c.rec.update(s)
			c.pos = int32(len(d.next))
			d.next = append(d.next, slot)
			continue
		}
		slot = d.alloc()
		silent := d.reported(s)
		// A TIME_WAIT socket no poll has seen is most likely the remnant
		// of a connection whose destroy notification the kernel has not
		// sent yet (it sends them from a work queue, late under load),
		// under a new cookie. It is held back one poll: a notification for
		// its tuple meanwhile makes it silent; otherwise it is announced.
		// When dumps leave TIME_WAIT out, the caller has notifications,
		// which report every connection: a remnant a dump still lists
		// (one in the fin_wait2 substate) is never announced, however late
		// the notification is read.
		remnant := !silent && !initial && !late && isRemnant(s)
		afterlife := remnant && d.noTimeWait
		held := remnant && !afterlife
		silent = silent || afterlife
		c := &d.conns[slot]
		*c = conn{rec: recordOf(s), firstSeen: nowNs, gen: d.gen, pos: int32(len(d.next)), lastEvent: nowNs}
		c.rec.phase = phaseNone.next(s)
		c.set(fUsed, true)
		c.set(fSilent, silent)
		c.set(fHeld, held)
		c.set(fAfterlife, afterlife)
		d.byCookie.Put(s.Cookie, slot, d.cookieOf)
		d.next = append(d.next, slot)
		if held {
			d.heldTuples[tuple(s)] = slot
		} else if !silent {
			d.emitNew(event.Event{Kind: event.Appeared, Time: now, Socket: *s, FirstSeen: now, Initial: initial, Late: late})
		}
	}
	d.cur, d.matched = cur, matched
}

// Finish ends the diff Begin started: the tracked sockets the dump did
// not return are suspects, looked up through p (nil: no lookups), and
// reported closed when confirmed gone. It returns the events of the
// whole diff, as Diff does.
func (d *Differ) Finish(now time.Time, p Prober) ([]event.Event, error) {
	d.now, d.nowNs = now, now.UnixNano()
	d.expireDead()

	// Suspects: tracked sockets this dump did not return. When every
	// socket of the last dump matched, only the pending ones can be.
	d.suspects = d.suspects[:0]
	if d.matched < len(d.order) {
		for _, slot := range d.order {
			if c := &d.conns[slot]; c.used() && c.gen != d.gen && c.pos >= 0 {
				d.suspects = append(d.suspects, slot)
			}
		}
	}
	for _, slot := range d.pending {
		if c := &d.conns[slot]; c.used() && c.gen != d.gen {
			d.suspects = append(d.suspects, slot)
		}
	}
	d.order, d.next = d.next, d.order
	err := d.confirm(d.now, p, d.diffLate)
	d.inDiff = false
	if !d.compact() && d.initial {
		d.trim()
	}
	return d.events, err
}

// Abort ends a diff whose dump failed part way: what its chunks showed
// was reported, but the sockets no chunk listed are no suspects, as the
// dump may not have reached them. They keep their place for the next
// dump.
func (d *Differ) Abort() {
	if !d.inDiff {
		return
	}
	for _, slot := range d.order {
		if c := &d.conns[slot]; c.used() && c.gen != d.gen && c.pos >= 0 {
			c.pos = int32(len(d.next))
			d.next = append(d.next, slot)
		}
	}
	d.order, d.next = d.next, d.order
	d.inDiff = false
}

// InDiff reports whether a diff is under way: Begin was called, and
// neither Finish nor Abort yet.
func (d *Differ) InDiff() bool { return d.inDiff }

// Reserve sizes the tracker for about n sockets, with headroom, before
// the first diff, as a caller that counted them can: grown chunk by
// chunk, it would leave garbage several times its size behind. It does
// nothing once the Differ tracks sockets.
func (d *Differ) Reserve(n int) {
	c := n + headroom(n)
	if len(d.conns) > 0 || c <= cap(d.conns) {
		return
	}
	d.conns = make([]conn, 0, c)
	d.byCookie.Reset(c)
	d.order = make([]int32, 0, c)
	d.next = make([]int32, 0, c) // empty: there are no slots yet
}

// headroom is the room kept for growth beside n tracked sockets: a few
// percent, as a new socket mostly takes the slot of a closed one.
func headroom(n int) int { return n/32 + 64 }

// trim gives back what the first dump's growth left unused: without
// Reserve the tracker grew by append, chunk after chunk, up to a quarter
// more than it holds.
func (d *Differ) trim() {
	n := len(d.conns)
	c := n + headroom(n)
	if cap(d.conns) <= c+n/16 {
		return
	}
	conns := make([]conn, n, c)
	copy(conns, d.conns)
	d.conns = conns
	order := make([]int32, len(d.order), c)
	copy(order, d.order)
	d.order, d.next = order, make([]int32, 0, c)
}

// compactMin is the fewest free slots worth a compaction.
const compactMin = 4096

// compact gives back the memory of a burst: once more than half of the
// slots are free (a resynchronising dump that listed a minute of TIME_WAIT
// sockets, since forgotten), the live sockets move to a tracker of their
// own size, and the cookie index, which a Go map never shrinks, is
// rebuilt. Slot numbers change; nothing outside the Differ holds them.
func (d *Differ) compact() bool {
	if len(d.free) < compactMin || len(d.free) < len(d.conns)/2 {
		return false
	}
	live := len(d.conns) - len(d.free)
	remap := make([]int32, len(d.conns))
	conns := make([]conn, 0, live+live/8)
	for i := range d.conns {
		remap[i] = -1
		if d.conns[i].used() {
			remap[i] = int32(len(conns))
			conns = append(conns, d.conns[i])
		}
	}
	move := func(slots []int32) []int32 {
		out := make([]int32, 0, max(len(slots), live+live/8))
		for _, v := range slots {
			if r := remap[v]; r >= 0 {
				out = append(out, r)
			}
		}
		return out
	}
	d.order, d.pending = move(d.order), move(d.pending)
	for i := range conns {
		conns[i].pos = -1
	}
	for i, slot := range d.order {
		conns[slot].pos = int32(i)
	}
	for k, v := range d.heldTuples {
		d.heldTuples[k] = remap[v]
	}
	d.conns, d.free = conns, nil
	d.byCookie.Reset(live + headroom(live))
	for i := range d.conns {
		d.byCookie.Put(d.conns[i].rec.cookie, int32(i), d.cookieOf)
	}
	d.next, d.pend2, d.suspects, d.keys, d.results = nil, nil, nil, nil, nil
	return true
}

// confirm decides the fate of each suspect.
func (d *Differ) confirm(now time.Time, p Prober, late bool) error {
	d.pend2 = d.pend2[:0]
	// A suspect whose close a destroy notification already reported needs
	// no lookup: what a dump no longer returns is at most its TIME_WAIT
	// remnant, which polls may not even ask for, and which a lookup would
	// find alive (same cookie) for a minute. It is forgotten, its cookie
	// kept as a dead one so that a later dump returning the remnant does
	// not announce it.
	live := d.suspects[:0]
	for _, slot := range d.suspects {
		if c := &d.conns[slot]; c.silent() {
			d.deadCookies.add(c.rec.cookie)
			d.release(slot)
			continue
		}
		live = append(live, slot)
	}
	d.suspects = live
	if len(d.suspects) == 0 {
		d.pending, d.pend2 = d.pend2, d.pending
		return nil
	}
	d.keys = d.keys[:0]
	for _, slot := range d.suspects {
		d.keys = append(d.keys, d.conns[slot].rec.key())
	}
	if cap(d.results) < len(d.keys) {
		d.results = make([]snapshot.LookupResult, len(d.keys))
	}
	d.results = d.results[:len(d.keys)]
	clear(d.results)
	var err error
	if p != nil {
		if err = p.Lookup(d.keys, d.results); err != nil {
			d.stats.LookupErrors++
		}
	}
	var done map[uint64]bool // flows (flowHash) of completed handshakes, built when needed
	// The lookups, or this diff when there are none, tell the closes.
	if d.opts.Clock != nil {
		now = d.opts.Clock()
	}
	for i, slot := range d.suspects {
		c := &d.conns[slot]
		c.pos = -1
		switch res := d.results[i]; {
		case res == snapshot.LookupGone && c.rec.goneMeansGone():
			if c.rec.phase == phaseOut && d.opts.Destroy && !c.silent() {
				// A failed connect leaves the kernel's tables at once,
				// and its destroy notification, which says how it
				// failed, comes when the application closes the socket.
				// Wait for it a while rather than report the close
				// without its outcome.
				goneAt, ok := d.goneAt[c.rec.cookie]
				if !ok {
					goneAt = d.nowNs
					d.goneAt[c.rec.cookie] = goneAt
				}
				if d.nowNs-goneAt < int64(AttemptWait) {
					d.pend2 = append(d.pend2, slot)
					continue
				}
			}
			fail := event.NotFailed
			if c.rec.phase == phaseIn && d.opts.Destroy {
				if done == nil {
					done = d.completedTuples()
				}
				if !done[d.flowHash(c.rec.tuple().flow())] {
					fail = event.FailedUnknown
				}
			}
			d.closeSlotFailed(slot, now, event.ReasonGone, late, fail)
			continue
		case res == snapshot.LookupStale && c.rec.staleMeansGone():
			d.closeSlotLate(slot, now, event.ReasonGone, late)
			continue
		case res == snapshot.LookupTimeWait && d.noTimeWait && c.rec.misses > 0:
			// Only its remnant is left, which dumps no longer list, at two
			// polls in a row: the connection closed and its notification
			// was lost (a late one had one poll to come, with the final
			// counters). Its cookie is kept as a dead one, as for a
			// reported close.
			d.deadCookies.add(c.rec.cookie)
			d.closeSlotLate(slot, now, event.ReasonGone, late)
			continue
		case res == snapshot.LookupTimeWait && d.noTimeWait:
			c.rec.misses++
		case res == snapshot.LookupAlive, res == snapshot.LookupTimeWait:
			d.stats.Skipped++
			c.rec.misses = 0
		default:
			d.stats.Unconfirmed++
			c.rec.misses++
			if int(c.rec.misses) >= d.opts.MissLimit {
				d.closeSlotLate(slot, now, event.ReasonGone, late)
				continue
			}
		}
		d.pend2 = append(d.pend2, slot)
	}
	d.pending, d.pend2 = d.pend2, d.pending
	return err
}

// goneMeansGone: an ENOENT answer comes from the kernel's established and
// listening hashes. A TCP socket in state close (bound, never listening or
// connected, or closed but still open) is in neither, only in the bind
// hash that dumps walk, so the answer proves nothing for it.
func (r *record) goneMeansGone() bool {
	return r.proto != snapshot.ProtoTCP || r.state != snapshot.StateClose
}

// staleMeansGone: an ESTALE answer means the kernel found another socket
// at the tuple. For a connected TCP socket the tuple is unique, so ours is
// gone; listeners and UDP sockets can share a tuple (SO_REUSEPORT), so the
// answer proves nothing for them.
func (r *record) staleMeansGone() bool {
	return r.proto == snapshot.ProtoTCP && r.state != snapshot.StateListen && r.dport != 0
}

func (d *Differ) alloc() int32 {
	if n := len(d.free); n > 0 {
		slot := d.free[n-1]
		d.free = d.free[:n-1]
		return slot
	}
	d.conns = append(d.conns, conn{})
	return int32(len(d.conns) - 1)
}

func (d *Differ) closeSlot(slot int32, now time.Time, reason string) {
	d.closeSlotLate(slot, now, reason, false)
}

func (d *Differ) closeSlotLate(slot int32, now time.Time, reason string, late bool) {
	d.closeSlotFailed(slot, now, reason, late, event.NotFailed)
}

func (d *Differ) closeSlotFailed(slot int32, now time.Time, reason string, late bool, fail event.Failure) {
	c := &d.conns[slot]
	if c.held() {
		d.unhold(slot)
		d.emitNew(event.Event{Kind: event.Appeared, Time: now, Socket: c.rec.socket(), FirstSeen: time.Unix(0, c.firstSeen)})
	}
	if !c.silent() {
		late = late || c.rec.flags&fRestored != 0
		d.emitNew(event.Event{Kind: event.Closed, Time: now, Socket: c.rec.socket(), FirstSeen: time.Unix(0, c.firstSeen), Reason: reason, Late: late, Failure: fail})
		if d.opts.Destroy && reason == event.ReasonGone {
			d.closedCookies[c.rec.cookie] = now.Add(lateDestroyWindow).UnixNano()
		}
	}
	d.release(slot)
}

// release stops tracking slot, without events.
func (d *Differ) release(slot int32) {
	c := &d.conns[slot]
	if c.held() {
		d.unhold(slot)
	}
	d.byCookie.Delete(c.rec.cookie, d.cookieOf)
	if len(d.goneAt) > 0 {
		delete(d.goneAt, c.rec.cookie)
	}
	*c = conn{pos: -1}
	d.free = append(d.free, slot)
}

// emitNew reports ev. It goes through d.ev, not the stack: handed by
// pointer to Output, a stack copy would escape and cost an allocation per
// event.
func (d *Differ) emitNew(ev event.Event) {
	d.ev = ev
	if !d.wanted(&d.ev) {
		return
	}
	if d.opts.Output != nil {
		d.opts.Output(&d.ev)
		return
	}
	d.events = append(d.events, d.ev)
}

func (d *Differ) wanted(ev *event.Event) bool {
	m := d.opts.States
	if m == 0 {
		return true
	}
	if m&(1<<ev.Socket.State) != 0 {
		return true
	}
	return ev.Kind == event.StateChanged && m&(1<<ev.PrevState) != 0
}

// Destroyed turns the kernel's destroy notifications into events. A
// tracked socket is reported closed at once, with its last record and the
// final counters of the notification; it stays tracked, silently, until
// polls no longer see it (its TIME_WAIT remnant keeps the cookie). A
// socket no poll saw is reported as appeared and closed, both marked
// short-lived. The slice is reused by the next call of Diff or Destroyed.
func (d *Differ) Destroyed(t *snapshot.Table, now time.Time) []event.Event {
	if !d.inDiff {
		d.resetEvents() // between two steps of a diff, its events are kept
	}
	for i := range t.Sockets {
		s := &t.Sockets[i]
		j, tracked := d.byCookie.Get(s.Cookie, d.cookieOf)
		if tracked && d.conns[j].rec.proto == s.Proto && d.conns[j].rec.family == s.Family && !d.conns[j].afterlife() {
			c := &d.conns[j]
			if c.silent() {
				continue // a repeated notification
			}
			if c.held() {
				// Held as a possible remnant, yet its own destroy came: a
				// remnant has none, so it was a real socket. Announce it
				// before its close.
				d.unhold(j)
				d.emitNew(event.Event{Kind: event.Appeared, Time: now, Socket: c.rec.socket(), FirstSeen: time.Unix(0, c.firstSeen)})
			}
			final := c.rec.socket()
			if s.HasInfo {
				final.Info = finalInfo(&final, &s.Info)
				final.HasInfo = true
			}
			if final.CgroupID == 0 {
				final.CgroupID = s.CgroupID
			}
			fail := event.NotFailed
			if c.rec.phase == phaseOut && s.HasInfo {
				// The notification's counters, not the combined ones: an
				// abortive close zeroes them, and the attempt is judged
				// by what the kernel says at the end.
				fail = attemptFailure(s)
			}
			d.emitNew(event.Event{Kind: event.Closed, Time: now, Socket: final, FirstSeen: time.Unix(0, c.firstSeen), Reason: event.ReasonDestroyed, Failure: fail})
			c.set(fSilent, true)
			continue
		}
		if d.deadCookies.has(s.Cookie) {
			continue
		}
		if _, done := d.closedCookies[s.Cookie]; done {
			delete(d.closedCookies, s.Cookie) // reported closed by a poll
			continue
		}
		if tracked && d.conns[j].afterlife() {
			// The connection of a silent remnant that kept its cookie.
			d.conns[j].set(fAfterlife, false)
		}
		if len(d.heldTuples) > 0 && s.Proto == snapshot.ProtoTCP {
			if j, ok := d.heldTuples[tuple(s)]; ok {
				// The held remnant was this connection's: never announce it.
				d.unhold(j)
				d.conns[j].set(fSilent, true)
			}
		}
		d.deadCookies.add(s.Cookie)
		if s.Proto == snapshot.ProtoTCP {
			d.deadFlows.add(d.flowHash(tuple(s).flow()))
		}
		d.emitNew(event.Event{Kind: event.Appeared, Time: now, Socket: *s, FirstSeen: now, ShortLived: true})
		d.emitNew(event.Event{Kind: event.Closed, Time: now, Socket: *s, FirstSeen: now, ShortLived: true, Reason: event.ReasonDestroyed,
			Failure: attemptFailure(s)})
	}
	return d.events
}

// reported says whether a socket new to the polls was already reported
// closed from a destroy notification.
func (d *Differ) reported(s *snapshot.Socket) bool {
	if d.deadCookies.has(s.Cookie) {
		return true
	}
	// A TIME_WAIT remnant shows as time_wait, or as fin_wait2 while the
	// kernel's timewait socket is in that substate. A socket with
	// tcp_info is a full socket, never a remnant: a new connection that
	// reuses the tuple of one just closed (connect reuses a port whose
	// TIME_WAIT is a second old) must not pass for its remnant.
	if isRemnant(s) {
		if d.deadFlows.has(d.flowHash(tuple(s).flow())) {
			return true
		}
	}
	return false
}

// expireDead forgets the poll-found closes whose window for a late
// notification has passed.
func (d *Differ) expireDead() {
	for k, until := range d.closedCookies {
		if d.nowNs > until {
			delete(d.closedCookies, k)
		}
	}
}

// tupleKey is a socket's key without the cookie, compact and free of
// pointers (netip.Addr holds one, for its zone): the held sockets are
// indexed by it, and a map without pointers is not scanned by the garbage
// collector.
type tupleKey struct {
	src, dst     [16]byte
	sport, dport uint16
	ifIndex      uint32
	proto        snapshot.Proto
	family       snapshot.Family
}

// tuple is s's tupleKey. Within a family As16 is one-to-one (an IPv4
// socket's addresses and an IPv6 socket's IPv4-mapped ones differ by
// family); sockets carry no zone.
func tuple(s *snapshot.Socket) tupleKey {
	return tupleKey{
		src: s.Src.Addr().As16(), dst: s.Dst.Addr().As16(),
		sport: s.Src.Port(), dport: s.Dst.Port(),
		ifIndex: s.IfIndex, proto: s.Proto, family: s.Family,
	}
}

// finalInfo combines the last polled tcp_info with the destroy message's.
// The counters only grow during a connection, but an abortive close
// (tcp_disconnect) zeroes them before the socket is destroyed, so each
// cumulative counter takes the larger of the two.
func finalInfo(last *snapshot.Socket, fin *snapshot.TCPInfo) snapshot.TCPInfo {
	out := *fin
	if !last.HasInfo {
		return out
	}
	l := &last.Info
	out.Len = max(out.Len, l.Len)
	out.TotalRetrans = max(out.TotalRetrans, l.TotalRetrans)
	out.BytesAcked = max(out.BytesAcked, l.BytesAcked)
	out.BytesReceived = max(out.BytesReceived, l.BytesReceived)
	out.SegsOut = max(out.SegsOut, l.SegsOut)
	out.SegsIn = max(out.SegsIn, l.SegsIn)
	out.BytesSent = max(out.BytesSent, l.BytesSent)
	out.BytesRetrans = max(out.BytesRetrans, l.BytesRetrans)
	if out.RTT == 0 {
		out.RTT, out.RTTVar = l.RTT, l.RTTVar
	}
	return out
}

// SetTimeWaitDumped says whether the dumps to come list TIME_WAIT
// sockets (the default) or leave them out, as a caller that has destroy
// notifications may: then a tracked socket a lookup finds only as its
// TIME_WAIT remnant is reported closed, instead of waiting, alive, for
// a dump to list it.
func (d *Differ) SetTimeWaitDumped(dumped bool) { d.noTimeWait = !dumped }

// SetStates changes the reported-states mask (0: all), for a reload. The
// tracked table is kept, so no live socket is announced again.
func (d *Differ) SetStates(mask uint32) { d.opts.States = mask }

// SetUpdateInterval changes Options.UpdateInterval, for a reload. A
// connection's next update is then due that long after its last event.
func (d *Differ) SetUpdateInterval(iv time.Duration) { d.opts.UpdateInterval = iv }

// SetDestroy changes Options.Destroy: the caller's destroy subscription
// started, or stopped.
func (d *Differ) SetDestroy(on bool) { d.opts.Destroy = on }

// Forget stops tracking, without events, every socket drop selects: used
// when a reload stops watching a protocol or family, whose sockets will no
// longer be dumped and must not be reported closed for that.
func (d *Differ) Forget(drop func(*snapshot.Socket) bool) int {
	n := 0
	for slot := range d.conns {
		c := &d.conns[slot]
		if !c.used() {
			continue
		}
		if s := c.rec.socket(); !drop(&s) {
			continue
		}
		if c.held() {
			d.unhold(int32(slot))
		}
		d.byCookie.Delete(c.rec.cookie, d.cookieOf)
		if len(d.goneAt) > 0 {
			delete(d.goneAt, c.rec.cookie)
		}
		*c = conn{pos: -1}
		d.free = append(d.free, int32(slot))
		n++
	}
	if n > 0 {
		// Positions are stale; the next Diff rebuilds them. Between the
		// steps of a diff, the sockets its chunks listed keep their
		// place in the new order, the others become pending.
		d.order = d.order[:0]
		d.pending = d.pending[:0]
		if d.inDiff {
			next := d.next[:0]
			for _, slot := range d.next {
				if c := &d.conns[slot]; c.used() && c.gen == d.gen {
					c.pos = int32(len(next))
					next = append(next, slot)
				}
			}
			d.next = next
			d.cur, d.matched = 0, 0
		}
		for slot := range d.conns {
			c := &d.conns[slot]
			if c.used() && !(d.inDiff && c.gen == d.gen) {
				c.pos = -1
				d.pending = append(d.pending, int32(slot))
			}
		}
	}
	return n
}

// Tracked is a socket's record as a Differ keeps it, for persisting the
// table across a restart.
type Tracked struct {
	Socket    snapshot.Socket
	FirstSeen time.Time
}

// Export returns every socket still alive (not yet reported closed).
func (d *Differ) Export() []Tracked {
	out := make([]Tracked, 0, d.byCookie.Len())
	for i := range d.conns {
		c := &d.conns[i]
		if c.used() && !c.silent() {
			out = append(out, Tracked{Socket: c.rec.socket(), FirstSeen: time.Unix(0, c.firstSeen)})
		}
	}
	return out
}

// Restore loads a table saved by a previous run before the first Diff.
// That Diff then reports only the differences, marked Late: sockets that
// closed or appeared while connlogd was not running. Sockets still alive
// are not announced again.
func (d *Differ) Restore(ts []Tracked) {
	for _, t := range ts {
		if _, dup := d.byCookie.Get(t.Socket.Cookie, d.cookieOf); dup {
			continue
		}
		slot := d.alloc()
		c := &d.conns[slot]
		*c = conn{rec: recordOf(&t.Socket), firstSeen: t.FirstSeen.UnixNano(), pos: -1}
		c.rec.phase = phaseNone.next(&t.Socket)
		c.set(fUsed, true)
		c.set(fRestored, true)
		d.byCookie.Put(t.Socket.Cookie, slot, d.cookieOf)
		d.pending = append(d.pending, slot)
	}
	d.started = true
	d.late = true
}

// CloseAll reports every tracked socket closed with the given reason and
// empties the tracker: used when a whole network namespace disappears.
func (d *Differ) CloseAll(now time.Time, reason string) []event.Event {
	d.resetEvents()
	for slot := range d.conns {
		if d.conns[slot].used() {
			d.closeSlot(int32(slot), now, reason)
		}
	}
	d.order, d.next = d.order[:0], d.next[:0]
	d.pending = d.pending[:0]
	d.inDiff = false
	return d.events
}

// NotInitial makes the first Diff report sockets as plain appeared ones,
// not as present at start-up: for a namespace found after start-up.
func (d *Differ) NotInitial() { d.started = true }

// keepEvents is the event capacity kept between calls. A burst (the
// start-up table: one event per socket) must not pin its slice for the
// daemon's life, so a larger one is dropped; steady polls stay allocation
// free.
const keepEvents = 4096

func (d *Differ) resetEvents() {
	if cap(d.events) > keepEvents {
		d.events = nil
		return
	}
	d.events = d.events[:0]
}

// SetOutput changes Options.Output, for a caller that moves the Differ to
// a new owner.
func (d *Differ) SetOutput(fn func(*event.Event)) { d.opts.Output = fn }

// isRemnant says s may be a TIME_WAIT remnant: in a state a timewait
// socket shows, and without tcp_info, which the kernel sends for full
// sockets only (dumps ask for it).
func isRemnant(s *snapshot.Socket) bool {
	return (s.State == snapshot.StateTimeWait || s.State == snapshot.StateFinWait2) && !s.HasInfo
}

func (d *Differ) unhold(slot int32) {
	c := &d.conns[slot]
	c.set(fHeld, false)
	if j, ok := d.heldTuples[c.rec.tuple()]; ok && j == slot {
		delete(d.heldTuples, c.rec.tuple())
	}
}

// flowing says whether a poll's record of s is a connection that carries
// traffic, for flow updates: a TCP socket past its handshake and before
// TIME_WAIT (whose remnant carries none), or a connected UDP socket.
func flowing(s *snapshot.Socket) bool {
	if s.Dst.Port() == 0 {
		return false
	}
	switch s.State {
	case snapshot.StateEstablished:
		return true
	case snapshot.StateFinWait1, snapshot.StateFinWait2, snapshot.StateCloseWait, snapshot.StateClosing, snapshot.StateLastAck:
		return s.Proto == snapshot.ProtoTCP
	}
	return false
}

// attemptFailure judges a TCP socket by its destroy notification's
// tcp_info (see "Failed attempts"): NotFailed when its handshake
// completed, when it sent nothing (or an abortive close zeroed the
// counters), or when the kernel's tcp_info is too old to tell.
func attemptFailure(s *snapshot.Socket) event.Failure {
	in := &s.Info
	if s.Proto != snapshot.ProtoTCP || !s.HasInfo || !in.HasBytes() || !in.HasSegs() || s.Dst.Port() == 0 {
		return event.NotFailed
	}
	if in.RTT != 0 || in.BytesAcked != 0 || in.SegsOut == 0 {
		return event.NotFailed
	}
	switch {
	case in.SegsIn > 0:
		return event.FailedRefused
	case in.TotalRetrans > 0:
		return event.FailedTimeout
	}
	return event.FailedUnknown
}

// flowKey is a connection's tuple without the interface, which a request
// socket and the connection that replaces it may not share.
type flowKey struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        snapshot.Proto
	family       snapshot.Family
}

// flowHash is a 64-bit hash of k, with the Differ's seed: two flows
// share one with a chance of about one in 2^64 per pair.
func (d *Differ) flowHash(k flowKey) uint64 { return maphash.Comparable(d.flowSeed, k) }

// flow is k without the interface.
func (k tupleKey) flow() flowKey {
	return flowKey{src: k.src, dst: k.dst, sport: k.sport, dport: k.dport, proto: k.proto, family: k.family}
}

// completedTuples returns the tuples of the TCP connections past their
// handshake that the Differ knows of: tracked ones, and those whose
// destroy notification it recently had.
func (d *Differ) completedTuples() map[uint64]bool {
	done := make(map[uint64]bool)
	for i := range d.conns {
		if c := &d.conns[i]; c.used() && c.rec.proto == snapshot.ProtoTCP && c.rec.phase != phaseIn {
			done[d.flowHash(c.rec.tuple().flow())] = true
		}
	}
	d.deadFlows.each(func(h uint64) { done[h] = true })
	return done
}
