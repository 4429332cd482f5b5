// Package heaptest measures the live heap for the memory benchmarks of
// several packages, which report the bytes their structures keep.
package heaptest

import "runtime"

// After runs f and returns the live heap once the garbage is collected.
func After(f func()) uint64 {
	var m runtime.MemStats
	f()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
