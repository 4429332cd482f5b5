package slotidx

import (
	"math/rand/v2"
	"testing"
)

// TestAgainstMap: random puts, replacements and deletes, some of keys
// that collide on purpose (the same low bits), agree with a map, and the
// index holds at most 3/4 of its table.
func TestAgainstMap(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		rng := rand.New(rand.NewPCG(seed, seed))
		keys := map[int32]uint64{} // the caller's table: slot → key
		want := map[uint64]int32{}
		keyOf := func(s int32) uint64 {
			k, ok := keys[s]
			if !ok {
				t.Fatalf("keyOf asked for slot %d, not indexed", s)
			}
			return k
		}
		var x Index
		next := int32(0)
		for op := range 20000 {
			k := rng.Uint64N(3000)
			if rng.IntN(4) == 0 {
				k <<= 40 // keys apart only in their high bits
			}
			switch rng.IntN(3) {
			case 0, 1:
				if old, ok := want[k]; ok {
					x.Put(k, old, keyOf) // a replacement by the same slot
					break
				}
				keys[next] = k
				x.Put(k, next, keyOf)
				want[k] = next
				next++
			case 2:
				if s, ok := want[k]; ok {
					x.Delete(k, keyOf)
					delete(want, k)
					delete(keys, s)
				} else {
					x.Delete(k, keyOf) // absent: nothing happens
				}
			}
			if x.Len() != len(want) {
				t.Fatalf("op %d: Len %d, want %d", op, x.Len(), len(want))
			}
			if x.n*4 > len(x.tab)*3 {
				t.Fatalf("op %d: %d keys in a table of %d", op, x.n, len(x.tab))
			}
			if op%500 == 0 {
				for k, s := range want {
					if got, ok := x.Get(k, keyOf); !ok || got != s {
						t.Fatalf("op %d: Get(%d) = %d, %v; want %d", op, k, got, ok, s)
					}
				}
				for range 100 {
					k := rng.Uint64N(3000) + 5000
					if _, ok := x.Get(k, keyOf); ok {
						t.Fatalf("op %d: Get(%d) found an absent key", op, k)
					}
				}
			}
		}
	}
}

func TestReserveAndReset(t *testing.T) {
	keys := []uint64{}
	keyOf := func(s int32) uint64 { return keys[s] }
	var x Index
	x.Reserve(1000, keyOf)
	size := len(x.tab)
	for i := range 1000 {
		keys = append(keys, uint64(i)*7919)
		x.Put(keys[i], int32(i), keyOf)
	}
	if len(x.tab) != size {
		t.Errorf("table grew from %d to %d within its reservation", size, len(x.tab))
	}
	for i := range 1000 {
		if s, ok := x.Get(keys[i], keyOf); !ok || s != int32(i) {
			t.Fatalf("Get(%d) = %d, %v", keys[i], s, ok)
		}
	}
	x.Reset(10)
	if x.Len() != 0 || len(x.tab) > 20 {
		t.Errorf("after Reset: %d keys, table of %d", x.Len(), len(x.tab))
	}
	if _, ok := x.Get(keys[0], keyOf); ok {
		t.Error("found a key after Reset")
	}
}
