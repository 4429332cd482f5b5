package audit

import (
	"net/netip"
	"slices"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// Sighting is a Call as the Joiner keeps it, with what was learnt of the
// process while it still ran: the call's records do not say which network
// namespace it was in, nor which socket its descriptor referred to.
type Sighting struct {
	Op    Op
	Time  time.Time
	Peer  netip.AddrPort // unmapped: an IPv4-mapped address as IPv4
	FSUID uint32         // the uid sockets it creates are owned by
	PID   int32
	FD    int32
	// Netns is the inode of the process's network namespace; 0 when the
	// process was gone before it could be read (it then matches sockets
	// of any namespace, which makes a tie likelier, never a wrong match
	// more likely than a tie).
	Netns uint64
	// Inode is the socket FD referred to just after the call; 0 unknown.
	Inode uint32
	// Cookie is the socket's cookie, when it was looked up; 0 unknown.
	Cookie uint64

	seq   uint64 // arrival number, set by Add
	Owner *event.Process
}

// Held reports whether process pid still holds socket inode at
// descriptor fd. A socket held by a descriptor is open, so the call that
// made it cannot be the one behind a socket that was destroyed or whose
// descriptors are all closed.
type Held func(pid, fd int32, inode uint32) bool

// JoinStats are cumulative counters of a Joiner.
type JoinStats struct {
	Sightings uint64 // calls taken
	Matched   uint64 // sockets given an owner by a call
	Ambiguous uint64 // sockets left without one: calls of different processes fit
	Expired   uint64 // calls no socket claimed within Keep
}

// Joiner matches audited calls to the sockets of events, pure but for
// the Held function it is given:
//
//   - a connect to the socket whose peer (destination) is the address
//     connected to; an accept to the accepted socket whose peer is the
//     address accepted, in both cases by address and port;
//   - owned by the call's fsuid (the uid sock_diag reports);
//   - in the network namespace the process was in;
//   - a connect made no later than the socket was first seen (for a
//     socket no poll saw, its event; a little clock slack allowed), an
//     accept no later than the event (a connection waits in the
//     listener's queue, where polls see it, until it is accepted); and
//     no earlier than keep before the event;
//   - when the call's socket cookie is known (looked up while the socket
//     lived), that socket only;
//   - when both inodes are known, the same socket; when the socket has
//     none (destroyed, or closed by its process), not a call whose socket
//     is still held open (Held);
//   - outbound sockets only to connects, inbound ones only to accepts.
//
// Matching by these needs every call made up to the socket's time (Seen
// says how far the records read go); until then only the socket's own
// cookie or inode matches, and Attribute holds the event.
//
// A socket whose owner /proc found as the process exited, without its
// executable, is matched to that process's calls only, and takes the
// call's owner, which names it.
//
// A socket gets an owner only when the calls that fit are all of one
// process; when calls of two processes fit, it gets none and Ambiguous
// counts it. A socket given an owner also gets the direction its call
// proves (accept: inbound, connect: outbound). A call serves one socket; the owner stays known for the
// socket's later events by cookie.
//
// Not safe for concurrent use.
type Joiner struct {
	keep        time.Duration
	isHeld      Held
	byPeer      map[netip.AddrPort]*peerCalls
	order       []callRef // every call, in arrival order
	seq         uint64
	n           int // calls waiting
	byCookie    map[uint64]matched
	cookies     []uint64 // byCookie's keys, oldest first, to bound it
	cand        []int
	stats       JoinStats
	held        []heldEvent
	heldCookies map[uint64]int // sockets with events held
	caught      time.Time      // the latest record time read
}

// peerCalls are the waiting calls to one peer, in arrival order, and how
// many of them each process made: when one process made them all, a
// socket's owner is that process whichever call made it, and the first
// call that fits is enough.
type peerCalls struct {
	calls []Sighting
	procs map[procKey]int
}

// procKey tells processes apart as sameProcess does, but for the uid
// and comm, which change only with the executable in practice.
type procKey struct {
	pid int32
	exe string
}

func keyOf(s *Sighting) procKey {
	if s.Owner == nil {
		return procKey{pid: s.PID}
	}
	return procKey{s.PID, s.Owner.Exe}
}

func (pc *peerCalls) remove(i int) {
	k := keyOf(&pc.calls[i])
	if pc.procs[k]--; pc.procs[k] <= 0 {
		delete(pc.procs, k)
	}
	if i == 0 {
		pc.calls[0] = Sighting{}
		pc.calls = pc.calls[1:]
	} else {
		pc.calls = slices.Delete(pc.calls, i, i+1)
	}
}

// maxScan bounds the calls one socket is compared with when several
// processes called its peer: past it the socket is a tie.
const maxScan = 256

// callRef names a call in arrival order, for Expire.
type callRef struct {
	peer netip.AddrPort
	seq  uint64
	time time.Time
}

// heldEvent is an event waiting for the records of its call.
type heldEvent struct {
	ev       event.Event
	netns    uint64
	deadline time.Time
}

// callsBy returns the time by which the connect that made ev's socket
// was made: for a socket no poll saw, its event's time; for one a poll
// saw, a little after it was first seen (dumpSlack).
func callsBy(ev *event.Event) time.Time {
	if !ev.FirstSeen.IsZero() && !ev.ShortLived {
		return ev.FirstSeen.Add(dumpSlack)
	}
	return ev.Time
}

// acceptsBy returns the time by which the accept that gave ev's socket
// to a process was made, if it was: its event's time. A connection
// waits in its listener's queue, where polls see it, until the server
// accepts it, as much later as the server is busy: ev's socket may have
// been first seen long before the call.
func acceptsBy(ev *event.Event) time.Time {
	if t := callsBy(ev); t.After(ev.Time) {
		return t
	}
	return ev.Time
}

// complete reports whether every call made by the time ev's socket was
// (or, for one that may have been accepted, by ev's time) has been read
// (see Seen).
func (j *Joiner) complete(ev *event.Event) bool {
	if ev.Direction == event.DirectionOutbound {
		return !j.caught.Before(callsBy(ev))
	}
	return !j.caught.Before(acceptsBy(ev))
}

// dumpSlack allows for a dump that ends after the time its events carry.
const dumpSlack = time.Second

// maxCookies bounds the sockets whose owner the Joiner remembers for
// their later events.
const maxCookies = 1 << 16

// maxCalls bounds the calls waiting for a socket: a burst beyond it
// ages the oldest out early.
const maxCalls = 1 << 16

// NewJoiner returns a Joiner keeping calls for keep (a socket must be
// reported within that time of its call to be matched; a poll interval
// or two plus the reader's delay). held may be nil: then sockets without
// an inode are matched on the other criteria alone.
func NewJoiner(keep time.Duration, held Held) *Joiner {
	return &Joiner{keep: keep, isHeld: held, byCookie: make(map[uint64]matched), byPeer: make(map[netip.AddrPort]*peerCalls), heldCookies: make(map[uint64]int)}
}

// Add takes a sighting.
func (j *Joiner) Add(s Sighting) {
	s.Peer = netip.AddrPortFrom(s.Peer.Addr().Unmap(), s.Peer.Port())
	if j.n >= maxCalls {
		j.dropOldest()
	}
	j.seq++
	s.seq = j.seq
	pc := j.byPeer[s.Peer]
	if pc == nil {
		pc = &peerCalls{procs: make(map[procKey]int, 1)}
		j.byPeer[s.Peer] = pc
	}
	pc.calls = append(pc.calls, s)
	pc.procs[keyOf(&s)]++
	j.order = append(j.order, callRef{s.Peer, s.seq, s.Time})
	j.n++
	j.stats.Sightings++
}

// Expire forgets calls older than keep before now.
func (j *Joiner) Expire(now time.Time) {
	cut := now.Add(-j.keep)
	for len(j.order) > 0 && j.order[0].time.Before(cut) {
		j.dropOldest()
	}
}

// dropOldest forgets the oldest call, unless a socket claimed it.
func (j *Joiner) dropOldest() {
	r := j.order[0]
	j.order = j.order[1:]
	pc := j.byPeer[r.peer]
	if pc != nil && len(pc.calls) > 0 && pc.calls[0].seq == r.seq {
		j.stats.Expired++
		j.n--
		pc.remove(0)
		if len(pc.calls) == 0 {
			delete(j.byPeer, r.peer)
		}
	}
	if cap(j.order) > 1024 && len(j.order) < cap(j.order)/4 {
		j.order = append([]callRef(nil), j.order...)
	}
}

// Stats returns the cumulative counters.
func (j *Joiner) Stats() JoinStats { return j.stats }

// Pending returns how many calls wait for a socket.
func (j *Joiner) Pending() int { return j.n }

// Annotate gives ev the owner of the call that made its socket, when
// exactly one process's calls fit, and ev has no owner yet. netns is the
// inode of the socket's network namespace.
func (j *Joiner) Annotate(ev *event.Event, netns uint64) {
	if j.annotate(ev, netns, true) {
		j.stats.Ambiguous++
	}
}

// annotate is Annotate without counting: it reports whether calls of
// different processes fit. complete says every call made by the time
// the socket was (callsBy) has been read; when it has not, the call of
// the socket may still be missing while another one fits, so only an
// exact match (the socket's cookie or inode) counts.
func (j *Joiner) annotate(ev *event.Event, netns uint64, complete bool) (ambiguous bool) {
	if ev.Kind == event.Gap || (ev.Process != nil && !incomplete(ev.Process)) {
		return false
	}
	// An owner found in /proc as its process exited has no executable:
	// that process's own call completes it, no other's.
	known := ev.Process
	var pid int32
	if known != nil {
		pid = int32(known.PID)
	}
	s := &ev.Socket
	if m, ok := j.byCookie[s.Cookie]; ok && s.Cookie != 0 && (pid == 0 || int32(m.owner.PID) == pid) {
		ev.Process = completed(known, m.owner)
		setDirection(ev, m.op)
		if ev.Kind == event.Closed {
			delete(j.byCookie, s.Cookie)
		}
		return false
	}
	if ev.Direction == event.DirectionListen || !s.Dst.IsValid() || s.Dst.Port() == 0 {
		return false
	}
	peer := netip.AddrPortFrom(s.Dst.Addr().Unmap().WithZone(""), s.Dst.Port())
	j.cand = j.cand[:0]
	// Audit stamps a call with the coarse clock at its entry, never later
	// than the event's reading of the clock: a socket no poll saw is
	// matched to calls up to its event's time, no later. A socket a poll
	// saw existed by the end of that dump, which started a little after
	// FirstSeen was taken.
	latest, latestAccept := callsBy(ev), acceptsBy(ev)
	earliest := ev.Time.Add(-j.keep)
	pc := j.byPeer[peer]
	if pc == nil {
		return false
	}
	calls := pc.calls
	oneProcess := len(pc.procs) == 1 || pid != 0
	checked := 0
	for i := range calls {
		c := &calls[i]
		by := latest
		if c.Op == OpAccept {
			by = latestAccept
		}
		if (pid != 0 && c.PID != pid) || c.FSUID != s.UID || (c.Netns != 0 && netns != 0 && c.Netns != netns) ||
			c.Time.After(by) || c.Time.Before(earliest) {
			continue
		}
		// The direction of a socket no poll saw is a guess against the
		// last dump's listeners, which may lack a listener as short-lived
		// as the socket: the peer tells connects from accepts well enough.
		switch dir := ev.Direction; {
		case ev.ShortLived:
		case dir == event.DirectionOutbound:
			if c.Op != OpConnect {
				continue
			}
		case dir == event.DirectionInbound:
			if c.Op != OpAccept {
				continue
			}
		}
		if c.Cookie != 0 && s.Cookie != 0 && c.Cookie != s.Cookie {
			continue
		}
		if c.Inode != 0 && s.Inode != 0 && s.Inode != c.Inode {
			continue
		}
		if !complete {
			if (c.Cookie != 0 && c.Cookie == s.Cookie) || (s.Inode != 0 && c.Inode == s.Inode) {
				j.cand = append(j.cand, i)
				break
			}
			continue
		}
		if oneProcess {
			// Every other call that fits names the same process, but one
			// whose socket is still held is not this one's: a socket whose
			// own call went unrecorded must not take it.
			if s.Inode == 0 && c.Inode != 0 && j.isHeld != nil && j.isHeld(c.PID, c.FD, c.Inode) {
				if checked++; checked > maxScan {
					return false
				}
				continue
			}
			j.cand = append(j.cand, i)
			break
		}
		j.cand = append(j.cand, i)
		if len(j.cand) > maxScan {
			return true
		}
	}
	if len(j.cand) == 0 {
		return false
	}
	// An exact cookie or inode match settles it.
	pick := -1
	for _, i := range j.cand {
		if c := &calls[i]; (c.Cookie != 0 && c.Cookie == s.Cookie) || (s.Inode != 0 && c.Inode == s.Inode) {
			pick = i
			break
		}
	}
	if pick < 0 && !oneProcess {
		// A socket that is gone, or no longer in any descriptor, cannot be
		// one a process still holds: drop those calls, then see whether
		// the others are one process's.
		if s.Inode == 0 && j.isHeld != nil {
			keep := j.cand[:0]
			for _, i := range j.cand {
				if c := &calls[i]; c.Inode == 0 || !j.isHeld(c.PID, c.FD, c.Inode) {
					keep = append(keep, i)
				}
			}
			j.cand = keep
			if len(j.cand) == 0 {
				return false
			}
		}
		first := &calls[j.cand[0]]
		for _, i := range j.cand[1:] {
			if !sameProcess(first.Owner, calls[i].Owner) {
				return true
			}
		}
	}
	if pick < 0 {
		pick = j.cand[0]
	}
	ev.Process = completed(known, calls[pick].Owner)
	op := calls[pick].Op
	setDirection(ev, op)
	pc.remove(pick)
	if len(pc.calls) == 0 {
		delete(j.byPeer, peer)
	}
	j.n--
	j.stats.Matched++
	if ev.Kind != event.Closed && s.Cookie != 0 {
		j.remember(s.Cookie, matched{ev.Process, op})
	}
	return false
}

// incomplete reports whether an owner lacks what a call's records name:
// its executable (/proc no longer has it once the process has exited).
func incomplete(p *event.Process) bool { return p.Exe == "" }

// completed returns the owner of a call of the process known names (nil:
// none known): the call's, which names its executable, with the command
// line known had when the call's records have none.
func completed(known, call *event.Process) *event.Process {
	if known == nil || call == nil || call.Cmdline != "" || known.Cmdline == "" {
		return call
	}
	p := *call
	p.Cmdline = known.Cmdline
	return &p
}

// matched is what the Joiner remembers of a socket it gave an owner.
type matched struct {
	owner *event.Process
	op    Op
}

// setDirection sets the direction the call that made the socket proves:
// a socket a process got from accept is inbound, one it connected is
// outbound.
func setDirection(ev *event.Event, op Op) {
	switch op {
	case OpConnect:
		ev.Direction = event.DirectionOutbound
	case OpAccept:
		ev.Direction = event.DirectionInbound
	}
}

func (j *Joiner) remember(cookie uint64, m matched) {
	if len(j.byCookie) >= maxCookies {
		// Drop the oldest still remembered (entries already claimed by a
		// closed event are skipped).
		for len(j.cookies) > 0 && len(j.byCookie) >= maxCookies {
			delete(j.byCookie, j.cookies[0])
			j.cookies = j.cookies[1:]
		}
	}
	if len(j.cookies) >= 2*maxCookies {
		// Compact: keep the keys still in the map.
		keep := j.cookies[:0]
		for _, c := range j.cookies {
			if _, ok := j.byCookie[c]; ok {
				keep = append(keep, c)
			}
		}
		j.cookies = keep
	}
	j.byCookie[cookie] = m
	j.cookies = append(j.cookies, cookie)
}

// sameProcess reports whether two owners describe one process: calls of
// one process give its owner whichever of them made the socket.
func sameProcess(a, b *event.Process) bool {
	if a == b {
		return true
	}
	return a != nil && b != nil && a.PID == b.PID && a.Exe == b.Exe && a.Comm == b.Comm && a.UID == b.UID
}

// Sight turns a finished Call into a Sighting, or reports false for a
// call that cannot have made a connection: no inet peer, or a failure
// that leaves no socket behind (a repeated connect on a connecting
// socket is the same socket as the first).
func Sight(c *Call) (Sighting, bool) {
	if !c.Peer.IsValid() || c.Op == OpNone {
		return Sighting{}, false
	}
	if !c.Success {
		if c.Op == OpAccept {
			return Sighting{}, false
		}
		switch -c.Exit {
		case einprogress, eintr, econnrefused, etimedout, ehostunreach, enetunreach, econnreset:
			// The connection was tried: its socket exists, and with
			// EINPROGRESS or EINTR it is still being made.
		default:
			return Sighting{}, false
		}
	}
	return Sighting{
		Op:    c.Op,
		Time:  c.Time,
		Peer:  netip.AddrPortFrom(c.Peer.Addr().Unmap(), c.Peer.Port()),
		FSUID: c.FSUID,
		PID:   c.PID,
		FD:    c.FD,
	}, true
}

// Linux errno values of connect(2)'s results that leave a tried
// connection behind (the same on every architecture this package knows).
const (
	eintr        = 4
	enetunreach  = 101
	econnreset   = 104
	etimedout    = 110
	econnrefused = 111
	ehostunreach = 113
	einprogress  = 115
)

// Seen tells the Joiner the time of a record read: the kernel sends
// records in the order calls end, so once a record stamped at or after T
// has been read, every call that ended before T has been too.
func (j *Joiner) Seen(t time.Time) {
	if t.After(j.caught) {
		j.caught = t
	}
}

// maxHeld bounds the events held back; past it they go out at once.
const maxHeld = 16384

// Attribute annotates ev (see Annotate) and, when it still has no owner
// and its socket's call may yet be read (an appeared or closed event of a
// connected socket, not one found at start-up nor a TIME_WAIT remnant),
// keeps a copy of it for Release instead, for at most grace from now
// (when the caller got it, or ev.Time when later; the event keeps its own
// time either way), and reports true; later events of a socket with an
// event held are held behind it.
// The kernel sends destroy notifications from the closing task at once,
// but audit records from its own thread, which a busy machine runs
// later: a connection of a few milliseconds can be reported destroyed
// before the record of its connect arrives. Nothing is held with grace
// 0, nor past maxHeld events.
func (j *Joiner) Attribute(ev *event.Event, netns uint64, now time.Time, grace time.Duration) (held bool) {
	ambiguous := j.annotate(ev, netns, j.complete(ev))
	s := &ev.Socket
	wait := (ev.Process == nil || incomplete(ev.Process)) && !ev.Initial && s.State != snapshot.StateTimeWait &&
		(ev.Kind == event.Appeared || ev.Kind == event.Closed) && s.Dst.IsValid() && s.Dst.Port() != 0
	if (wait || j.heldCookies[s.Cookie] > 0) && grace > 0 && len(j.held) < maxHeld {
		// Later events of a held socket wait behind it, in order.
		// A caller that got ev late (its loop held up) still waits the
		// whole grace for records the reader may not have read.
		from := ev.Time
		if now.After(from) {
			from = now
		}
		j.held = append(j.held, heldEvent{ev: *ev, netns: netns, deadline: from.Add(grace)})
		j.heldCookies[s.Cookie]++
		return true
	}
	if ambiguous {
		j.stats.Ambiguous++
	}
	return false
}

// Held returns how many events are held back.
func (j *Joiner) Held() int { return len(j.held) }

// Release annotates the held events again and hands to emit, in the
// order they were held, those that have an owner now, whose call's
// records must have been read by now (a record stamped after the event
// was read), or whose grace ran out at now. It stops at the first event
// still waiting, so that a socket's closed event never overtakes its
// appeared event. all releases every event (at shutdown).
func (j *Joiner) Release(now time.Time, all bool, emit func(*event.Event)) {
	n := 0
	for n < len(j.held) {
		h := &j.held[n]
		complete := j.complete(&h.ev)
		if !complete && !all && !now.After(h.deadline) {
			// Not every call up to the socket's is read: an exact match
			// only, and wait for the rest.
			j.annotate(&h.ev, h.netns, false)
			if h.ev.Process == nil || incomplete(h.ev.Process) {
				break
			}
		}
		ambiguous := j.annotate(&h.ev, h.netns, complete)
		if c := h.ev.Socket.Cookie; j.heldCookies[c] <= 1 {
			delete(j.heldCookies, c)
		} else {
			j.heldCookies[c]--
		}
		if ambiguous {
			j.stats.Ambiguous++
		}
		emit(&h.ev)
		n++
	}
	if n > 0 {
		j.held = append(j.held[:0], j.held[n:]...)
	}
}

// NextRelease returns when the first held event's grace runs out, and
// false when none is held.
func (j *Joiner) NextRelease() (time.Time, bool) {
	if len(j.held) == 0 {
		return time.Time{}, false
	}
	return j.held[0].deadline, true
}
