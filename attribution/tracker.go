package attribution

import (
	"net/netip"
	"slices"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/slotidx"
	"github.com/connlogd/connlogd/snapshot"
)

// keepRefreshes is how many Refreshes a socket's record outlives its last
// dump: a socket a dump missed is reported closed by the differ up to
// MissLimit (3) polls later, and that event must still find its owner.
const keepRefreshes = 8

// record is what a Tracker knows of one socket (one cookie): 32 bytes,
// and no pointer, so that the garbage collector does not scan the table.
type record struct {
	cookie uint64
	// seen is the Tracker.gen of the last dump that had it; once absent,
	// of the first dump that missed it.
	seen  uint32
	inode uint32  // as last dumped; 0 once its process closed it
	pos   int32   // index in Tracker.order, -1 while absent
	own   ownerID // 0 without process attribution, or before it had an inode
	cg    cgSlot  // of its cgroup id (Resolver.cgSlots); 0 for none
	class class
	dir   event.Direction
	used  bool
}

// listener is a listening socket as the direction index needs it.
type listener struct {
	key  listenKey
	addr netip.Addr
}

// Tracker attributes the sockets of one network namespace: it remembers
// each socket's owner, cgroup and direction for the socket's life, so
// that its closed event still has them when the kernel no longer does
// (TIME_WAIT remnants and destroy notifications have no inode).
//
// Use one Tracker per differ: Refresh with each dump, then Annotate the
// events of that dump's diff and of the destroy notifications in between.
// Its methods may be called concurrently with those of other Trackers of
// the same Resolver.
type Tracker struct {
	r        *Resolver
	recs     []record
	free     []int32
	byCookie slotidx.Index // slots by cookie (see cookieOf)
	cookieOf func(int32) uint64
	order    []int32 // slots in the order of the last dump
	next     []int32
	absent   []int32 // slots missing from recent dumps, kept for a while
	absent2  []int32
	fresh    []freshRec // new or reclassified sockets of this Refresh
	lst      []listener // this dump's listeners
	prevLst  []listener // the last dump's, to skip rebuilding an unchanged index
	index    listeners  // the last dump's, and new ones as a dump shows them
	building listeners  // the listeners of the dump under way so far
	gen      uint32     // 32 bits keep a record at 32 bytes; wrapping takes 136 years of polls a second
	// The refresh under way (BeginRefresh to EndRefresh): where in order
	// the next guess is, how many of order matched, whether this dump's
	// listeners differ from the last one's so far, and whether /proc was
	// read for it.
	cur, matched int
	lstNew       bool
	resolved     bool
	lastCgid     uint64 // the last cgroup looked up, and its entry
	lastCg       *cgroupEntry
}

// freshRec is a record whose direction is decided once its chunk's
// listeners are known.
type freshRec struct {
	slot int32
	sock int32 // index in the table
}

// NewTracker returns a Tracker for one network namespace.
func (r *Resolver) NewTracker() *Tracker {
	t := &Tracker{r: r}
	t.cookieOf = func(slot int32) uint64 { return t.recs[slot].cookie }
	t.index.reset()
	t.building.reset()
	return t
}

// Len returns the number of sockets the Tracker remembers.
func (t *Tracker) Len() int {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	return t.byCookie.Len()
}

// Refresh learns the sockets of a dump of the Tracker's namespace: their
// directions, cgroups and, for sockets whose inode is new, their owning
// processes, reading /proc as little as it can (see the package doc). A
// dump whose sockets are all known costs a pass over the table and one
// listing of /proc. Refresh is BeginRefresh, RefreshChunk with the whole
// table, then EndRefresh.
func (t *Tracker) Refresh(tab *snapshot.Table) {
	t.BeginRefresh()
	t.RefreshChunk(tab)
	t.EndRefresh(true)
}

// BeginRefresh starts the refresh of a dump that comes in chunks, each
// handed to RefreshChunk as it is read, before the events of its sockets
// are annotated: the owners of the sockets a chunk shows new are looked
// for at once. EndRefresh ends it. A new socket's direction is decided
// against the listeners of the last dump and those of this dump's chunks
// so far (a dump lists TCP listeners before connections).
func (t *Tracker) BeginRefresh() {
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.call++
	t.gen++
	t.next, t.lst = t.next[:0], t.lst[:0]
	t.cur, t.matched, t.lstNew, t.resolved = 0, 0, false, false
	t.building.reset()
}

// RefreshChunk learns the sockets of one chunk of the dump BeginRefresh
// started. tab is not kept.
func (t *Tracker) RefreshChunk(tab *snapshot.Table) {
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.call++
	t.fresh = t.fresh[:0]
	t.reserve(tab.Len())
	cur, matched := t.cur, t.matched
	lst0 := len(t.lst)
	for i := range tab.Sockets {
		s := &tab.Sockets[i]
		cls := classOf(s)
		if cls == classListen {
			t.lst = append(t.lst, listener{listenKey{s.Proto, s.Family, s.Src.Port()}, s.Src.Addr().WithZone("")})
		}
		// Dumps come back in the same order from poll to poll: try the
		// record that followed the last match before the map.
		slot := int32(-1)
		if cur < len(t.order) && t.recs[t.order[cur]].cookie == s.Cookie {
			slot = t.order[cur]
			cur++
		} else if j, ok := t.byCookie.Get(s.Cookie, t.cookieOf); ok {
			slot = j
			if rc := &t.recs[j]; rc.pos >= 0 && rc.seen != t.gen {
				cur = int(rc.pos) + 1
			}
		}
		if slot < 0 {
			slot = t.alloc()
			t.recs[slot] = record{cookie: s.Cookie, class: cls, used: true, pos: -1}
			t.byCookie.Put(s.Cookie, slot, t.cookieOf)
			t.update(&t.recs[slot], s)
			t.fresh = append(t.fresh, freshRec{slot, int32(i)})
		} else {
			rc := &t.recs[slot]
			if rc.seen == t.gen {
				continue // a dump under churn can return a socket twice
			}
			if rc.pos >= 0 {
				matched++
			} else if rc.own != 0 && rc.inode != 0 {
				// Absent from the dumps before, back in this one.
				r.owner(rc.own).set(oPresent, true)
			}
			if s.Inode != rc.inode || s.CgroupID != r.cgid(rc.cg) {
				t.update(rc, s)
			}
			if cls != rc.class {
				rc.class, rc.dir = cls, event.DirectionUnknown
				t.fresh = append(t.fresh, freshRec{slot, int32(i)})
			}
		}
		rc := &t.recs[slot]
		rc.seen = t.gen
		rc.pos = int32(len(t.next))
		t.next = append(t.next, slot)
	}
	t.cur, t.matched = cur, matched
	// The chunk's new sockets are judged against this dump's listeners
	// so far (a TCP dump lists its listeners before its connections),
	// not the last dump's: a UDP socket that connected was a listener
	// then. Listeners new since the last dump also join the index that
	// annotates destroy notifications at once; those gone leave it at
	// EndRefresh.
	for i := lst0; i < len(t.lst); i++ {
		l := t.lst[i]
		t.building.m[l.key] = append(t.building.m[l.key], l.addr)
		if !t.lstNew && i < len(t.prevLst) && l == t.prevLst[i] {
			continue
		}
		t.lstNew = true
		if !slices.Contains(t.index.m[l.key], l.addr) {
			t.index.m[l.key] = append(t.index.m[l.key], l.addr)
		}
	}
	for _, f := range t.fresh {
		t.recs[f.slot].dir = t.building.direction(&tab.Sockets[f.sock])
	}
	if len(r.queue) > 0 {
		r.resolve(!t.resolved, true)
		t.resolved = true
	}
}

// EndRefresh ends the refresh BeginRefresh started. complete says the
// dump ended well: the records no chunk listed are then absent. After a
// failed dump, which may not have reached them, they keep their place.
func (t *Tracker) EndRefresh(complete bool) {
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.call++
	if !complete {
		for _, slot := range t.order {
			if rc := &t.recs[slot]; rc.used && rc.seen != t.gen && rc.pos >= 0 {
				rc.pos = int32(len(t.next))
				t.next = append(t.next, slot)
			}
		}
		t.order, t.next = t.next, t.order
		return
	}
	t.sweepAbsent(t.matched)
	t.order, t.next = t.next, t.order

	if t.lstNew || len(t.lst) != len(t.prevLst) {
		// building holds this dump's listeners, all of them now.
		t.index, t.building = t.building, t.index
		t.lst, t.prevLst = t.prevLst, t.lst
	}
	switch {
	case !t.resolved:
		// Once a dump at least: the listing of /proc notices the
		// processes that exited.
		r.resolve(true, false)
	case len(r.deferred) > 0:
		// The second looks the chunks' rounds left, now that the
		// sockets gone are known; what those rounds queued is the next
		// dump's.
		later := r.queue
		r.queue, r.deferred = r.deferred, r.queue[:0:0]
		r.resolve(false, false)
		r.queue = append(r.queue, later...)
	}
}

// Reserve sizes the Tracker's storage for about n sockets, as a caller
// that counted them before the first dump can (a chunk at a time, the
// storage would otherwise grow step by step, leaving garbage behind and
// up to a quarter unused). It does nothing once the Tracker holds sockets.
func (t *Tracker) Reserve(n int) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	t.reserve(n + n/32)
}

// reserve sizes the Tracker's storage for a table of n sockets when it
// is far too small, as on the first Refresh: growing a 100k-entry map and
// slice step by step costs a good part of a first pass.
func (t *Tracker) reserve(n int) {
	if t.byCookie.Len() >= n/2 {
		return
	}
	if cap(t.recs) < n {
		recs := make([]record, len(t.recs), n)
		copy(recs, t.recs)
		t.recs = recs
	}
	t.byCookie.Reserve(n, t.cookieOf)
	if cap(t.next) < n {
		next := make([]int32, len(t.next), n)
		copy(next, t.next)
		t.next = next
	}
	if len(t.order) == 0 && cap(t.order) < n {
		t.order = make([]int32, 0, n)
	}
	if r := t.r; r.procfs != nil && r.owners.Len() == 0 {
		r.owners.Reserve(n, r.inodeOf)
		if cap(r.ownerTab) < n+1 {
			tab := make([]owner, len(r.ownerTab), n+1)
			copy(tab, r.ownerTab)
			r.ownerTab = tab
		}
	}
}

// update takes a dumped socket's inode and cgroup id into its record.
func (t *Tracker) update(rc *record, s *snapshot.Socket) {
	r := t.r
	if s.CgroupID != r.cgid(rc.cg) {
		if rc.cg != 0 {
			r.cgUnref(rc.cg)
			rc.cg = 0
		}
		if s.CgroupID != 0 {
			// Neighbours in a dump mostly share a cgroup.
			if s.CgroupID != t.lastCgid {
				t.lastCgid, t.lastCg = s.CgroupID, r.cgroupLookup(s.CgroupID)
			}
			rc.cg = r.cgRef(t.lastCg)
		}
	}
	if s.Inode == rc.inode {
		return
	}
	if s.Inode == 0 {
		// Its process closed it (an orphan in FIN_WAIT, or the TIME_WAIT
		// remnant): the owner learned while it was open stays.
		if rc.own != 0 {
			r.owner(rc.own).set(oPresent, false)
		}
		rc.inode = 0
		return
	}
	if rc.own != 0 {
		r.release(rc.own)
	}
	rc.inode = s.Inode
	rc.own = r.ownerFor(s.Inode, s.CgroupID)
}

// sweepAbsent handles the records the dump did not return: their sockets
// are no longer in any descriptor this Tracker can vouch for, and after
// keepRefreshes dumps without them they are forgotten.
func (t *Tracker) sweepAbsent(matched int) {
	if matched < len(t.order) {
		for _, slot := range t.order {
			if rc := &t.recs[slot]; rc.seen != t.gen {
				rc.pos = -1
				rc.seen = t.gen // the first dump that missed it
				if rc.own != 0 {
					t.r.owner(rc.own).set(oPresent, false)
				}
				t.absent = append(t.absent, slot)
			}
		}
	}
	if len(t.absent) == 0 {
		return
	}
	keep := t.absent2[:0]
	for _, slot := range t.absent {
		rc := &t.recs[slot]
		switch {
		case rc.pos >= 0:
			// Back in a dump.
		case t.gen-rc.seen >= keepRefreshes:
			t.drop(slot)
		default:
			keep = append(keep, slot)
		}
	}
	t.absent, t.absent2 = keep, t.absent
}

func (t *Tracker) alloc() int32 {
	if n := len(t.free); n > 0 {
		slot := t.free[n-1]
		t.free = t.free[:n-1]
		return slot
	}
	t.recs = append(t.recs, record{})
	return int32(len(t.recs) - 1)
}

func (t *Tracker) drop(slot int32) {
	rc := &t.recs[slot]
	if rc.own != 0 {
		t.r.release(rc.own)
	}
	if rc.cg != 0 {
		t.r.cgUnref(rc.cg)
	}
	t.byCookie.Delete(rc.cookie, t.cookieOf)
	*rc = record{pos: -1}
	t.free = append(t.free, slot)
}

// Close forgets every socket of the Tracker, for a namespace that is gone.
func (t *Tracker) Close() {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	for slot := range t.recs {
		if t.recs[slot].used {
			t.drop(int32(slot))
		}
	}
	t.order, t.absent = t.order[:0], t.absent[:0]
}

// Annotate sets Direction, Process and Cgroup on the socket events of
// evs, from what the Tracker learned of each socket; events of sockets it
// never saw (connections that lived between two dumps, from destroy
// notifications) get a direction against the last dump's listeners and
// the cgroup their record names. Gap events are left alone. A field stays
// unset (nil, DirectionUnknown) when it is not known or not configured.
func (t *Tracker) Annotate(evs []event.Event) {
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.call++
	for i := range evs {
		t.annotate(&evs[i])
	}
}

// AnnotateEvent is Annotate for one event, for callers that receive
// events one at a time (differ.Options.Output).
func (t *Tracker) AnnotateEvent(ev *event.Event) {
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.call++
	t.annotate(ev)
}

func (t *Tracker) annotate(ev *event.Event) {
	r := t.r
	if ev.Kind == event.Gap {
		return
	}
	s := &ev.Socket
	var own ownerID
	var cg *cgroupEntry
	if slot, ok := t.byCookie.Get(s.Cookie, t.cookieOf); ok {
		rc := &t.recs[slot]
		own, cg = rc.own, r.cgSlots[rc.cg].e
		if rc.class == classOf(s) {
			ev.Direction = rc.dir
		} else {
			// An older identity of the socket (a UDP socket's closed
			// event before it connected).
			ev.Direction = t.index.direction(s)
		}
		if s.CgroupID != r.cgid(rc.cg) {
			cg = nil
		}
	} else {
		ev.Direction = t.index.direction(s)
		if s.Inode != 0 {
			own = r.ownerOf(s.Inode)
		}
	}
	if r.cfg.Process && own != 0 {
		ev.Process = r.owner(own).proc
	}
	if r.cfg.Cgroup && s.CgroupID != 0 {
		if cg == nil {
			cg = r.cgroupLookup(s.CgroupID)
		}
		ev.Cgroup = cg.info
	}
}
