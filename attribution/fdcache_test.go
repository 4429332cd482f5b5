package attribution

import (
	"slices"
	"testing"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

func TestFDCacheForms(t *testing.T) {
	tests := []struct {
		name  string
		out   []fdEnt
		dense bool
	}{
		{"empty", nil, false},
		{"one", []fdEnt{{7, 70}}, true},
		{"contiguous", []fdEnt{{3, 30}, {4, 40}, {5, 50}, {6, 60}}, true},
		{"half the span", []fdEnt{{3, 30}, {5, 50}, {7, 70}, {9, 90}, {10, 100}}, true},
		{"spread", []fdEnt{{3, 30}, {500, 5000}, {1 << 20, 7}}, false},
	}
	var c fdCache
	// One cache through every case: each form's storage is reused or
	// dropped as the form changes.
	for _, tt := range append(tests, tests...) {
		c.store(tt.out)
		if c.dense != tt.dense {
			t.Errorf("%s: dense %v; want %v", tt.name, c.dense, tt.dense)
		}
		if c.dense && c.pairs != nil || !c.dense && c.inodes != nil {
			t.Errorf("%s: the other form's storage kept", tt.name)
		}
		var got []fdEnt
		k := c.cursor()
		for f, ok := k.next(); ok; f, ok = k.next() {
			got = append(got, f)
		}
		if !slices.Equal(got, tt.out) {
			t.Errorf("%s: walked %v; want %v", tt.name, got, tt.out)
		}
	}
}

// TestCachedDescriptorsBothForms: a process's known sockets are not read
// again whichever form its cache takes, and a new one among them is
// found.
func TestCachedDescriptorsBothForms(t *testing.T) {
	for _, stride := range []int32{1, 50} {
		f := newFakeFS()
		p := f.add(10, "server", "/")
		var socks []snapshot.Socket
		for i := range int32(100) {
			ino := uint32(1000 + i)
			p.fds[3+i*stride] = ino
			socks = append(socks, estab(uint64(i+1), ino, 1))
		}
		r := newFakeResolver(defaultCfg, f)
		tr := r.NewTracker()
		tr.Refresh(tableOf(socks...))
		if dense := r.procs[10].fds.dense; dense != (stride == 1) {
			t.Errorf("stride %d: dense cache %v; want %v", stride, dense, stride == 1)
		}
		links := f.links
		newFD := int32(3 + 100) // after the known ones
		if stride > 1 {
			newFD = 4 + 50*stride // between two known ones
		}
		p.fds[newFD] = 2000
		socks = append(socks, estab(500, 2000, 1))
		tr.Refresh(tableOf(socks...))
		// The new descriptor and the three that are not sockets.
		if n := f.links - links; n != 4 {
			t.Errorf("stride %d: read %d links for one new socket; want 4", stride, n)
		}
		if got := pidOf(annotated(tr, event.Appeared, socks[100])); got != 10 {
			t.Errorf("stride %d: new socket's owner %d; want 10", stride, got)
		}
		// A known socket's descriptor closed as two new ones opened: the
		// read for them finds it gone, and the next round, no one else.
		delete(p.fds, 3+10*stride)
		p.fds[newFD+1], p.fds[newFD+2] = 2001, 2002
		socks = append(socks, estab(501, 2001, 1), estab(502, 2002, 1))
		tr.Refresh(tableOf(socks...))
		tr.Refresh(tableOf(socks...))
		if got := pidOf(annotated(tr, event.Appeared, socks[10])); got != 10 {
			t.Errorf("stride %d: closed descriptor's socket lost its last owner (%d); want it kept", stride, got)
		}
		if o := r.owner(r.ownerOf(1010)); o.heldBy(10) {
			t.Errorf("stride %d: pid 10 still holds a socket whose descriptor closed", stride)
		}
	}
}
