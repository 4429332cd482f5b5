package attribution

import (
	"fmt"

	"github.com/connlogd/connlogd/event"
)

// cgroupEntry is what is known of one cgroup id.
type cgroupEntry struct {
	id     uint64
	path   string        // "" while unknown
	info   *event.Cgroup // set with path
	missed bool          // a walk did not find it: it is gone, and stays unknown
	slot   cgSlot        // in Resolver.cgSlots while records refer to it; 0 else
	refs   int32         // the records referring to it
}

// cgSlot indexes Resolver.cgSlots; 0 is none. Records refer to their
// cgroup's entry by slot, 4 bytes where a pointer takes 8 and would make
// the records' table one the garbage collector scans.
type cgSlot uint32

// cgSlotEntry is a slot of Resolver.cgSlots: the entry, and its id
// beside it for the comparison every record makes at every dump.
type cgSlotEntry struct {
	id uint64
	e  *cgroupEntry
}

// cgid returns the cgroup id of slot x; 0 for none.
func (r *Resolver) cgid(x cgSlot) uint64 { return r.cgSlots[x].id }

// cgRef takes a record's reference to e and returns its slot. An entry
// the cache has dropped (see walk) lives on in its slot while a record
// refers to it, keeping what was known of a cgroup since removed.
func (r *Resolver) cgRef(e *cgroupEntry) cgSlot {
	if e.slot == 0 {
		if n := len(r.cgFree); n > 0 {
			e.slot = r.cgFree[n-1]
			r.cgFree = r.cgFree[:n-1]
		} else {
			e.slot = cgSlot(len(r.cgSlots))
			r.cgSlots = append(r.cgSlots, cgSlotEntry{})
		}
		r.cgSlots[e.slot] = cgSlotEntry{e.id, e}
	}
	e.refs++
	return e.slot
}

// cgUnref drops a record's reference to the entry at slot x; the last
// one frees the slot.
func (r *Resolver) cgUnref(x cgSlot) {
	e := r.cgSlots[x].e
	e.refs--
	if e.refs > 0 {
		return
	}
	e.slot = 0
	r.cgSlots[x] = cgSlotEntry{}
	r.cgFree = append(r.cgFree, x)
}

// cgroupLookup returns the entry of cgroup id, resolving it when new.
//
// The tree is walked at most once per Refresh or Annotate call, when an
// id is not in the last walk's index. A socket's cgroup existed before
// the dump or notification that reported it, and the call comes after
// that, so an id its walk does not find was removed (ids are never
// reused): it is not looked for again.
func (r *Resolver) cgroupLookup(id uint64) *cgroupEntry {
	e := r.cgroups[id]
	if e == nil {
		e = &cgroupEntry{id: id}
		r.cgroups[id] = e
	}
	if e.path != "" || e.missed || r.cgfs == nil {
		return e
	}
	path, ok := r.cgIndex[id]
	if !ok && r.walkCall != r.call {
		r.walk()
		path, ok = r.cgIndex[id]
	}
	if !ok {
		e.missed = true
		return e
	}
	unit, ctr := ParseCgroupPath(path)
	e.path = path
	e.info = &event.Cgroup{Path: path, SystemdUnit: unit, ContainerID: ctr}
	return e
}

// walk rebuilds the id → path index, and trims the cache of ids that are
// gone once it holds many of them: records keep their entries alive.
func (r *Resolver) walk() {
	r.walkCall = r.call
	r.stats.CgroupWalks++
	idx, err := r.cgfs.Walk()
	if err != nil {
		// Without cgroup fields configured, the tree only narrows the
		// search for processes: failing costs time, not information.
		if r.cfg.Cgroup {
			r.warn(warnCgroupWalk, fmt.Errorf("attribution: read the cgroup tree: %w; sockets of new cgroups get no cgroup fields", err))
		}
		if r.cgIndex == nil {
			r.cgIndex = map[uint64]string{}
		}
		return
	}
	r.cgIndex = idx
	if len(r.cgroups) > 2*len(idx)+1024 {
		for id := range r.cgroups {
			if _, ok := idx[id]; !ok {
				delete(r.cgroups, id)
			}
		}
	}
}
