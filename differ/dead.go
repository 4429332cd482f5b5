package differ

// deadSet remembers keys for as long as a poll that began before they
// were added may still be diffed: the keys added in the last three
// generations (Begin calls), one map each.
//
// Why not one map with each key's generation, swept at every poll: at
// full churn tens of thousands of short-lived sockets pass through it a
// second, and a Go map whose keys are deleted one by one fills with
// tombstones that every later lookup and insertion probes past (measured
// at 18,000 connections a second: 11 % of the daemon's CPU in the map's
// probing, most of it in these maps). Dropping a generation whole with
// clear leaves no tombstones, and costs nothing per key.
type deadSet[K comparable] struct {
	gens [3]map[K]struct{}
	cur  int // index of the map keys are added to
	// peak is the most keys each map held since it was made (keys are
	// only added, so its length when it stops being current): a Go map
	// keeps the size of its peak, and clear keeps it too.
	peak [3]int
}

func newDeadSet[K comparable]() deadSet[K] {
	var s deadSet[K]
	for i := range s.gens {
		s.gens[i] = make(map[K]struct{})
	}
	return s
}

// add remembers k in the current generation.
func (s *deadSet[K]) add(k K) {
	s.gens[s.cur][k] = struct{}{}
}

// has says whether k was added in the last three generations.
func (s *deadSet[K]) has(k K) bool {
	// Newest first: a repeated key is most often a recent one.
	for i := range 3 {
		if len(s.gens[(s.cur+3-i)%3]) == 0 {
			continue
		}
		if _, ok := s.gens[(s.cur+3-i)%3][k]; ok {
			return true
		}
	}
	return false
}

// rotate starts a generation: the oldest one's keys are forgotten.
func (s *deadSet[K]) rotate() {
	last := len(s.gens[s.cur])
	s.peak[s.cur] = max(s.peak[s.cur], last)
	s.cur = (s.cur + 1) % 3
	if s.peak[s.cur] >= compactMin && last < s.peak[s.cur]/4 {
		// Past a burst: a map that held it is made anew, sized for what
		// a generation holds now.
		s.gens[s.cur] = make(map[K]struct{}, last)
		s.peak[s.cur] = 0
		return
	}
	clear(s.gens[s.cur])
}

// each calls f with every key remembered.
func (s *deadSet[K]) each(f func(K)) {
	for _, m := range s.gens {
		for k := range m {
			f(k)
		}
	}
}

// cookieSet is a deadSet of socket cookies that also keeps each
// generation's lowest and highest cookie. The kernel hands cookies out
// from a counter, in batches per processor, so the cookie of a socket
// destroyed now is mostly above every one of the older generations:
// has, asked of nearly every destroy notification and nearly always
// answering no, then probes one map, or none, instead of three.
type cookieSet struct {
	deadSet[uint64]
	lo, hi [3]uint64
}

func (s *cookieSet) add(k uint64) {
	if len(s.gens[s.cur]) == 0 {
		s.lo[s.cur], s.hi[s.cur] = k, k
	} else {
		s.lo[s.cur], s.hi[s.cur] = min(s.lo[s.cur], k), max(s.hi[s.cur], k)
	}
	s.deadSet.add(k)
}

func (s *cookieSet) has(k uint64) bool {
	for i := range 3 {
		g := (s.cur + 3 - i) % 3
		if len(s.gens[g]) == 0 || k < s.lo[g] || k > s.hi[g] {
			continue
		}
		if _, ok := s.gens[g][k]; ok {
			return true
		}
	}
	return false
}
