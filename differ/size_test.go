package differ

import (
	"testing"
	"unsafe"
)

// TestRecordSizes holds the per-socket structs to the sizes the memory
// figures (bench/churn/README.md) count: a field added to them costs
// 100 kB at 100,000 sockets, and one in the wrong place 800 kB.
func TestRecordSizes(t *testing.T) {
	if n := unsafe.Sizeof(record{}); n != 136 {
		t.Errorf("record is %d bytes; want 136", n)
	}
	if n := unsafe.Sizeof(conn{}); n != 160 {
		t.Errorf("conn is %d bytes; want 160", n)
	}
}
