package attribution

import (
	"errors"
	"io/fs"
	"slices"
)

// maxWantMap is the most wanted sockets indexed in a map of their own.
const maxWantMap = 4096

// group is the first tier of a scan: the wanted sockets created in one
// cgroup, looked for among the processes in that cgroup.
type group struct {
	cgid      uint64
	path      string
	idx       int32 // in scan.order
	remaining int   // wanted sockets of the group with no holder in it yet
}

// scan is one resolution round's scratch, kept to reuse its storage.
type scan struct {
	cands []cand // the owners looked for, each marked in wantBits
	// wantBits marks the owners looked for this round, by ownerID: a bit
	// per owner is all the scratch that outlives the rounds.
	wantBits []uint64
	want     map[uint32]int32 // inode → index in cands when few, else nil
	wantMap  map[uint32]int32 // want's storage
	candOf   []int32          // ownerID → index in cands when many, for the round only
	groups   map[uint64]*group
	order    []*group
	noCand   int // wanted sockets with no holder found yet
	tentMax  int32
	thorough bool // some wanted socket is on its second look: read every process
}

// cand is the search for one wanted owner in a round.
type cand struct {
	id   ownerID
	pid  int32 // the best holder found so far
	grp  int32 // 1 + index in scan.order of the socket's cgroup tier; 0 for none
	rank int8  // -1: no holder found yet; 0: in the socket's cgroup; 1: elsewhere
}

// maxKeptCands is the most cands whose storage a round keeps for the
// next: rounds are mostly a chunk's new sockets (a few thousand at
// most), and the rare large one (a first dump refreshed whole, a mass
// of second looks) should not leave its size behind.
const maxKeptCands = 4 * maxWantMap

// resolve attributes the queued owners. It lists the processes (to notice
// exits) on every call, and reads descriptor tables only when some socket
// is to be attributed.
//
// The owner of a socket is, among the processes that hold it, the one
// with the lowest pid in the cgroup the socket was created in, or, if
// none there holds it, the one with the lowest pid elsewhere. Processes
// are read in that order:
//
//  1. for each cgroup of a wanted socket, its processes (cgroup.procs),
//     ascending, until each of its sockets has a holder there;
//  2. then every other process, ascending, while some socket has no
//     holder or might have one with a lower pid.
//
// On a socket's first look, a process read before whose descriptor count
// (Linux 6.2+) has not changed since is skipped: holding a new socket
// takes a descriptor more, unless the process closed one meanwhile. The
// second look, at the next Refresh, reads every process, so such a
// socket, if it still exists, gets its owner one poll late. Without the
// skip, a single new connection on a host where every process is in one
// cgroup would cost a listing of every descriptor table.
//
// Reading a table reads only the links of descriptors not already known
// to hold a live socket (see readFDs).
//
// list says to list the processes again; without it (the later chunks of
// a dump, whose first chunk's round listed them) the last listing is
// used, unless it failed: a dump of many chunks with new sockets in each
// lists /proc once, as a dump refreshed whole does.
//
// chunk says the round is a chunk's (RefreshChunk), before the dump's end
// says which sockets are gone: it looks for the sockets the chunk showed
// new only. Second looks, and sockets whose owner let go, wait for the
// round at the dump's end (EndRefresh), when those no longer in the
// table are known closed and need no look: at a churn of thousands of
// connections a second, most of them.
func (r *Resolver) resolve(list, chunk bool) {
	if r.procfs == nil {
		return
	}
	// The queue is taken before the sweep: sockets whose owner exited are
	// queued by it for the next round, by which time the next dump says
	// whether they outlived their owner (most close with it).
	queue := r.queue
	r.queue = nil
	pids, ok := r.pidBuf, r.listedOK
	if list || !ok {
		pids, ok = r.sweep()
		r.listedOK = ok
	}
	r.sameDump = !list
	if !ok {
		r.queue = append(r.queue, queue...)
		return
	}
	if len(queue) == 0 {
		return
	}
	r.round++
	sc := &r.sc
	if sc.groups == nil {
		sc.groups = make(map[uint64]*group)
	}
	clear(sc.groups)
	sc.cands, sc.order = sc.cands[:0], sc.order[:0]
	if cap(sc.cands) < len(queue) {
		sc.cands = make([]cand, 0, len(queue)) // not grown step by step
	}
	sc.noCand, sc.tentMax, sc.thorough = 0, 0, false
	if n := (cap(r.ownerTab) + 63) / 64; len(sc.wantBits) < n {
		sc.wantBits = make([]uint64, n) // all clear between rounds
	}

	for _, id := range queue {
		o := r.owner(id)
		o.set(oQueued, false)
		switch {
		case o.refs == 0:
			r.free(id) // released while queued
			continue
		case o.state != stWanted && o.state != stRetry:
			continue
		case !o.present():
			// Closed, or orphaned by its process, before it was found:
			// keep what was known, if anything.
			r.settle(id, nil)
			continue
		case r.isWanted(id):
			continue // queued twice: looked for once
		}
		if o.state == stRetry || o.proc != nil {
			if chunk {
				// Waits for the round at the dump's end (see above).
				o.set(oQueued, true)
				r.deferred = append(r.deferred, id)
				continue
			}
			// A second look, or a socket whose owner let go of it: the
			// processes that hold it had it before, their counts unchanged.
			sc.thorough = true
		}
		c := cand{id: id, rank: -1}
		sc.noCand++
		if o.cgid != 0 {
			if e := r.cgroupLookup(o.cgid); e.path != "" {
				g := sc.groups[o.cgid]
				if g == nil {
					g = &group{cgid: o.cgid, path: e.path, idx: int32(len(sc.order))}
					sc.groups[o.cgid] = g
					sc.order = append(sc.order, g)
				}
				g.remaining++
				c.grp = g.idx + 1
			}
		}
		sc.wantBits[id>>6] |= 1 << (id & 63)
		sc.cands = append(sc.cands, c)
	}
	if len(sc.cands) == 0 {
		return
	}
	r.stats.Scans++
	// The cached descriptors of skipped processes are checked against the
	// wanted sockets: a small map of them stays in the cache, the owners
	// map does not. A first pass, with everything wanted and nothing
	// cached, does without.
	sc.want = nil
	if len(sc.cands) <= maxWantMap {
		if sc.wantMap == nil {
			sc.wantMap = make(map[uint32]int32)
		}
		clear(sc.wantMap)
		for i, c := range sc.cands {
			sc.wantMap[r.owner(c.id).inode] = int32(i)
		}
		sc.want = sc.wantMap
	} else {
		// Many: the owners index finds them, and a table for the round
		// their cands.
		sc.candOf = make([]int32, len(r.ownerTab))
		for i, c := range sc.cands {
			sc.candOf[c.id] = int32(i)
		}
	}

	// Tier 1: the sockets' own cgroups. Their order does not matter: a
	// holder found in another socket's cgroup only ranks second.
	for _, g := range sc.order {
		members, err := r.cgfs.Procs(g.path, r.fdBuf[:0])
		r.fdBuf = members
		if err != nil {
			continue // the cgroup went away: its sockets are anyone's
		}
		slices.Sort(members)
		// members aliases fdBuf, which readFDs uses: copy it out.
		grpPids := append(r.tmpPids(len(members)), members...)
		for _, pid := range grpPids {
			if g.remaining == 0 {
				break
			}
			if !r.skip(pid, g) {
				r.readFDs(pid, g)
			}
		}
	}
	for _, c := range sc.cands {
		if c.rank == 1 && c.pid > sc.tentMax {
			sc.tentMax = c.pid
		}
	}

	// Tier 2: everyone else.
	for _, pid := range pids {
		if sc.noCand == 0 && pid > sc.tentMax {
			break
		}
		if !r.skip(pid, nil) {
			r.readFDs(pid, nil)
		}
	}

	for i := range sc.cands {
		c := &sc.cands[i]
		sc.wantBits[c.id>>6] &^= 1 << (c.id & 63)
		r.settle(c.id, c)
	}
	sc.want, sc.candOf = nil, nil
	if cap(sc.cands) > maxKeptCands {
		sc.cands = nil
	}
}

// skip reports whether process pid is not to be read now: it is
// unreadable, was read (or skipped) already this round, or this is a
// first look and its descriptor count is what it was when last read. A
// process skipped for its count may still hold a wanted socket it had
// when last read (created before it was bound or connected, so before
// any dump had it): its cached descriptors are checked, and a hit is
// confirmed by reading that one link.
func (r *Resolver) skip(pid int32, g *group) bool {
	p := r.procs[pid]
	switch {
	case p == nil:
		return false
	case p.denied || p.round == r.round:
		return true
	case r.sameDump && p.read && p.readList == r.listGen:
		// Read whole in an earlier round of this dump (a chunk before):
		// its cached descriptors stand for it. A busy process's table
		// would otherwise be read again for every chunk with new
		// sockets; one created since that read is found at the next
		// dump's second look, as a dump refreshed whole finds one
		// created after its round.
		p.round = r.round
		r.confirmCached(p, g)
		return true
	case r.sc.thorough || !p.read:
		return false
	}
	n, ok := r.procfs.FDCount(pid)
	if !ok || n != p.nfds {
		return false
	}
	p.round = r.round
	r.confirmCached(p, g)
	return true
}

// confirmCached confirms the cached descriptors of p that hold a wanted
// socket (see skip).
func (r *Resolver) confirmCached(p *proc, g *group) {
	k := p.fds.cursor()
	for f, ok := k.next(); ok; f, ok = k.next() {
		if c := r.wanted(f.inode); c != nil {
			r.confirm(p, f, c, g)
		}
	}
}

// wanted returns the search for the owner of inode if it is looked for
// this round; nil if not.
func (r *Resolver) wanted(inode uint32) *cand {
	sc := &r.sc
	if sc.want != nil {
		if i, ok := sc.want[inode]; ok {
			return &sc.cands[i]
		}
		return nil
	}
	if id := r.ownerOf(inode); id != 0 && r.isWanted(id) {
		return &sc.cands[sc.candOf[id]]
	}
	return nil
}

// isWanted reports whether owner id is looked for this round.
func (r *Resolver) isWanted(id ownerID) bool {
	b := r.sc.wantBits
	return int(id>>6) < len(b) && b[id>>6]&(1<<(id&63)) != 0
}

// confirm reads the link of one cached descriptor of p and offers p as a
// holder of c's socket if it still holds it.
func (r *Resolver) confirm(p *proc, f fdEnt, c *cand, g *group) {
	dir, err := r.procfs.OpenFDs(p.pid)
	if err != nil {
		r.fdError(p, err)
		return
	}
	inode, sock, err := dir.Link(f.fd)
	dir.Close()
	r.stats.Links++
	if err == nil && sock && inode == f.inode {
		r.offer(c, p.pid, g)
	}
}

// tmpPids returns scratch space for n pids that readFDs does not use.
func (r *Resolver) tmpPids(n int) []int32 {
	if cap(r.pidScratch) < n {
		r.pidScratch = make([]int32, 0, n)
	}
	return r.pidScratch[:0]
}

// settle records the outcome of a wanted owner's round: c is its search,
// nil when it was not looked for.
func (r *Resolver) settle(id ownerID, c *cand) {
	o := r.owner(id)
	if c != nil && c.rank >= 0 {
		o.proc = r.details(r.procs[c.pid])
		o.set(oHeld, true)
		o.state = stKnown
		r.stats.Attributed++
		return
	}
	switch {
	case o.proc != nil:
		// Its owner let go and nobody readable holds it now: the socket
		// is closing, and the last owner is still the right answer.
		o.state = stKnown
	case o.state == stWanted && o.present():
		// A socket accepted at the moment of the dump may not be in its
		// process's table yet, or its process was skipped for an
		// unchanged count: one more look, reading every process, at the
		// next resolve.
		o.state = stRetry
		r.enqueue(id)
	default:
		o.state = stUnknown
		r.stats.Unknown++
	}
}

// readFDs reads process pid's descriptor table, offering the wanted
// sockets it holds as candidates; g is the cgroup tier being read (nil in
// the second tier).
//
// Only links of descriptors not known to hold a live socket are read:
// a descriptor that held socket S at the last read and S is still in its
// namespace's table is taken to hold S still. The descriptor could have
// been closed and reused meanwhile only if S lived on in another
// descriptor; a socket missed that way is looked for again in the second
// tier or the next round, and is never attributed wrongly.
func (r *Resolver) readFDs(pid int32, g *group) {
	p := r.procs[pid]
	if p == nil {
		// Running during this round's listing, or started since and found
		// in a cgroup.procs: either way the next listing decides.
		p = &proc{pid: pid, listed: r.listGen}
		r.procs[pid] = p
	}
	p.round = r.round
	if p.denied {
		return
	}
	dir, err := r.procfs.OpenFDs(pid)
	if err != nil {
		r.fdError(p, err)
		return
	}
	defer dir.Close()
	fds, err := dir.List(r.fdBuf[:0])
	r.fdBuf = fds
	if err != nil {
		r.fdError(p, err)
		return
	}
	r.stats.FDTables++
	out := r.tmpFDs[:0]
	linked := r.linked[:0] // socket inodes whose links were read
	old := p.fds.cursor()
	for _, fd := range fds {
		o, ok := old.peek()
		for ok && o.fd < fd {
			r.lost(p, o.inode)
			old.next()
			o, ok = old.peek()
		}
		var prev uint32
		if ok && o.fd == fd {
			prev = o.inode
			old.next()
			if id := r.ownerOf(prev); id != 0 && r.owner(id).present() && !r.isWanted(id) {
				out = append(out, fdEnt{fd, prev})
				continue
			}
		}
		inode, sock, err := dir.Link(fd)
		r.stats.Links++
		if err != nil || !sock {
			if prev != 0 {
				r.lost(p, prev)
			}
			continue
		}
		if prev != 0 && prev != inode {
			r.lost(p, prev)
		}
		out = append(out, fdEnt{fd, inode})
		linked = append(linked, inode)
	}
	for o, ok := old.next(); ok; o, ok = old.next() {
		r.lost(p, o.inode)
	}
	// The sockets read are matched after the reads, in one tight loop:
	// each readlink runs enough kernel code to evict the owners map from
	// the cache, and a lookup after each would miss every time.
	for _, inode := range linked {
		if c := r.wanted(inode); c != nil {
			r.offer(c, pid, g)
		}
	}
	r.linked = linked
	p.fds.store(out)
	r.tmpFDs = out
	p.nfds = len(fds)
	p.read = true
	p.readList = r.listGen
}

func (r *Resolver) fdError(p *proc, err error) {
	switch {
	case permissionError(err):
		p.denied = true
		r.warnDenied(p.pid, err)
	case errors.Is(err, fs.ErrNotExist):
		// Exited since the listing; the next sweep forgets it.
	default:
		// Exited in the middle of the read (ESRCH and the like).
	}
}

// offer records pid as a holder of c's socket, keeping the better of it
// and the holder found so far: one in the socket's cgroup, then the
// lowest pid.
func (r *Resolver) offer(c *cand, pid int32, g *group) {
	rank := int8(1)
	if g != nil && c.grp == g.idx+1 {
		rank = 0
	}
	sc := &r.sc
	switch {
	case c.rank < 0:
		sc.noCand--
	case rank < c.rank, rank == c.rank && pid < c.pid:
	default:
		return
	}
	if rank == 0 && c.rank != 0 {
		g.remaining--
	}
	c.rank, c.pid = rank, pid
}
