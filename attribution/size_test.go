package attribution

import (
	"testing"
	"unsafe"
)

// TestRecordSizes holds the per-socket structs to the sizes the memory
// figures (bench/churn/README.md) count.
func TestRecordSizes(t *testing.T) {
	if n := unsafe.Sizeof(record{}); n != 32 {
		t.Errorf("record is %d bytes; want 32", n)
	}
	if n := unsafe.Sizeof(owner{}); n != 24 {
		t.Errorf("owner is %d bytes; want 24", n)
	}
}
