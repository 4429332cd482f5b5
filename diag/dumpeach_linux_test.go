//go:build linux

package diag

import (
	"net"
	"slices"
	"testing"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/snapshot"
)

// TestDumpEach: a dump taken in chunks lists what Dump lists, in the same
// order, each chunk but the last holding at least the asked number of
// sockets, each handed over in the table flush returned before.
func TestDumpEach(t *testing.T) {
	ns := netnstest.New(t)
	c := openIn(t, ns)
	var keep []net.Conn
	t.Cleanup(func() {
		for _, k := range keep {
			k.Close()
		}
	})
	err := ns.Do(func() error {
		for range 300 {
			u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return err
			}
			keep = append(keep, u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var whole snapshot.Table
	if err := c.Dump(&whole, allReqs); err != nil {
		t.Fatal(err)
	}
	if whole.Len() < 300 {
		t.Fatalf("Dump listed %d sockets; want at least 300", whole.Len())
	}
	const n = 64
	tables := []*snapshot.Table{{}, {}}
	var chunks [][]snapshot.Socket
	next := 1
	last, err := c.DumpEach(tables[0], allReqs, n, func(full *snapshot.Table) *snapshot.Table {
		if full != tables[1-next] {
			t.Errorf("chunk %d handed over in a table flush did not return", len(chunks))
		}
		chunks = append(chunks, slices.Clone(full.Sockets))
		full.Sockets = append(full.Sockets, snapshot.Socket{}) // DumpEach must empty what it gets back
		t := tables[next]
		next = 1 - next
		return t
	})
	if err != nil {
		t.Fatal(err)
	}
	chunks = append(chunks, last.Sockets)
	// A datagram holds up to a few hundred sockets, and a chunk ends
	// with one.
	if len(chunks) < 2 {
		t.Fatalf("%d chunks; want several", len(chunks))
	}
	var all []snapshot.Socket
	for i, ch := range chunks {
		if i < len(chunks)-1 && len(ch) < n {
			t.Errorf("chunk %d holds %d sockets; want at least %d", i, len(ch), n)
		}
		all = append(all, ch...)
	}
	keys := func(ss []snapshot.Socket) []snapshot.Key {
		var out []snapshot.Key
		for i := range ss {
			out = append(out, ss[i].Key)
		}
		return out
	}
	if !slices.Equal(keys(all), keys(whole.Sockets)) {
		t.Errorf("the chunks list %d sockets, Dump %d, or in another order", len(all), whole.Len())
	}
}
