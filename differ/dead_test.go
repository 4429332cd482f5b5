package differ

import (
	"math/rand/v2"
	"testing"
)

// A key is remembered until the third rotation after it was added: a
// dump begun before the destroy was read may be diffed until then.
func TestDeadSetKeepsThreeGenerations(t *testing.T) {
	s := newDeadSet[uint64]()
	s.add(1)
	for i := range 2 {
		s.rotate()
		if !s.has(1) {
			t.Fatalf("forgotten after %d rotations; want kept for 2", i+1)
		}
	}
	s.add(2)
	s.rotate()
	if s.has(1) {
		t.Error("key 1 still kept after 3 rotations")
	}
	if !s.has(2) || deadLen(&s) != 1 {
		t.Errorf("has(2) %v, len %d; want the newer key alone", s.has(2), deadLen(&s))
	}
}

// After a burst, the map that held it is made anew rather than cleared,
// so that its size goes back to what a generation holds now.
func TestDeadSetShrinksAfterABurst(t *testing.T) {
	s := newDeadSet[uint64]()
	for k := range uint64(4 * compactMin) {
		s.add(k)
	}
	burst := s.cur
	for range 3 {
		s.rotate()
		s.add(uint64(1 << 40))
	}
	if s.cur != burst {
		t.Fatalf("current map %d; want the burst's %d again", s.cur, burst)
	}
	if s.peak[burst] != 0 || deadLen(&s) != 3 || s.has(0) {
		t.Errorf("peak %d, len %d, has(0) %v; want a new map, the burst forgotten", s.peak[burst], deadLen(&s), s.has(0))
	}
}

// A cookieSet answers as the deadSet it wraps: its bounds only spare
// probes. Random cookies, from interleaved rising runs as the kernel's
// per-processor batches give them, and random rotations.
func TestCookieSetAnswersAsItsSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	c := cookieSet{deadSet: newDeadSet[uint64]()}
	plain := newDeadSet[uint64]()
	next := [2]uint64{1, 4097}
	var added []uint64
	for i := range 200000 {
		switch r := rng.IntN(100); {
		case r < 1:
			c.rotate()
			plain.rotate()
		case r < 50:
			cpu := rng.IntN(2)
			k := next[cpu]
			if next[cpu]++; next[cpu]%4096 == 1 {
				next[cpu] += 4096 // the processor takes its next batch
			}
			c.add(k)
			plain.add(k)
			added = append(added, k)
		default:
			var k uint64
			if len(added) > 0 && rng.IntN(2) == 0 {
				k = added[rng.IntN(len(added))]
			} else {
				k = rng.Uint64N(next[0] + next[1])
			}
			if got, want := c.has(k), plain.has(k); got != want {
				t.Fatalf("step %d: has(%d) = %v; the plain set says %v", i, k, got, want)
			}
		}
	}
}

// deadLen is the number of keys s remembers, counted per generation.
func deadLen[K comparable](s *deadSet[K]) int {
	return len(s.gens[0]) + len(s.gens[1]) + len(s.gens[2])
}
