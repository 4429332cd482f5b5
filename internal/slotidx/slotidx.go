// Package slotidx indexes the slots of a caller's table by a 64-bit key
// that the table itself holds, such as a socket cookie. It stores only
// the slots: 4 bytes an entry at a load of at most 3/4, where a Go map
// from the key to the slot takes some 20 bytes an entry (key, value,
// padding and control byte, at the load its growth leaves), and never
// shrinks. At 100,000 sockets that is about 1.4 MB less per index, for
// each of the differ's and the owner tracker's. The price is that the
// index asks the table for the key of a slot it probes (keyOf).
//
// Open addressing with linear probing and backward-shift deletion: no
// tombstones, so a table that churns keeps its probe lengths. The table
// size need not be a power of two: a key's home is the high half of the
// product of its mixed hash and the size.
package slotidx

import "math/bits"

// empty marks a free entry.
const empty = -1

// Index maps keys to slots. The zero Index is empty and ready to use.
// It is not safe for concurrent use.
type Index struct {
	tab []int32
	n   int
}

// Len returns the number of keys.
func (x *Index) Len() int { return x.n }

// home is the entry where key's probe starts.
func (x *Index) home(key uint64) int {
	h := key * 0x9E3779B97F4A7C15
	h ^= h >> 29
	hi, _ := bits.Mul64(h, uint64(len(x.tab)))
	return int(hi)
}

// Get returns key's slot.
func (x *Index) Get(key uint64, keyOf func(int32) uint64) (int32, bool) {
	if x.n == 0 {
		return 0, false
	}
	for i := x.home(key); ; {
		s := x.tab[i]
		if s == empty {
			return 0, false
		}
		if keyOf(s) == key {
			return s, true
		}
		if i++; i == len(x.tab) {
			i = 0
		}
	}
}

// Put sets key's slot, replacing the one it had. keyOf must answer for
// the slots already indexed; slot's own key is key.
func (x *Index) Put(key uint64, slot int32, keyOf func(int32) uint64) {
	if (x.n+1)*4 > len(x.tab)*3 {
		x.resize(max(16, (x.n+1)*2), keyOf)
	}
	for i := x.home(key); ; {
		s := x.tab[i]
		if s == empty {
			x.tab[i] = slot
			x.n++
			return
		}
		if keyOf(s) == key {
			x.tab[i] = slot
			return
		}
		if i++; i == len(x.tab) {
			i = 0
		}
	}
}

// Delete removes key. keyOf must still answer key for its slot.
func (x *Index) Delete(key uint64, keyOf func(int32) uint64) {
	if x.n == 0 {
		return
	}
	size := len(x.tab)
	i := x.home(key)
	for {
		s := x.tab[i]
		if s == empty {
			return
		}
		if keyOf(s) == key {
			break
		}
		if i++; i == size {
			i = 0
		}
	}
	// Shift back the entries after i whose probe passed through it.
	j := i
	for {
		if j++; j == size {
			j = 0
		}
		s := x.tab[j]
		if s == empty {
			break
		}
		h := x.home(keyOf(s))
		// s may move to i when its home is not in the cyclic range (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			x.tab[i] = s
			i = j
		}
	}
	x.tab[i] = empty
	x.n--
}

// Reserve sizes the table for n keys, when it is smaller; keyOf must
// answer for the slots indexed.
func (x *Index) Reserve(n int, keyOf func(int32) uint64) {
	if size := n*4/3 + 1; size > len(x.tab) {
		x.resize(size, keyOf)
	}
}

// Reset empties the index and gives its table back, sized for n keys.
func (x *Index) Reset(n int) {
	x.tab, x.n = nil, 0
	if n > 0 {
		x.tab = make([]int32, n*4/3+1)
		for i := range x.tab {
			x.tab[i] = empty
		}
	}
}

func (x *Index) resize(size int, keyOf func(int32) uint64) {
	old := x.tab
	x.tab = make([]int32, size)
	for i := range x.tab {
		x.tab[i] = empty
	}
	x.n = 0
	for _, s := range old {
		if s != empty {
			x.insertNew(keyOf(s), s)
		}
	}
}

// insertNew adds a key known to be absent, with room for it.
func (x *Index) insertNew(key uint64, slot int32) {
	for i := x.home(key); ; {
		if x.tab[i] == empty {
			x.tab[i] = slot
			x.n++
			return
		}
		if i++; i == len(x.tab) {
			i = 0
		}
	}
}
