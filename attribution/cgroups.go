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
