package snapshot

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzFeed feeds arbitrary datagrams to the dump parser: it must never
// panic, and every socket it keeps must be well formed.
func FuzzFeed(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.bin"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint32(0))
		f.Add(b[:len(b)/2], firstSeq(b))
	}
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, seq uint32) {
		if len(b) >= HeaderLen && seq == 0 {
			seq = firstSeq(b)
		}
		var tab Table
		var st Stats
		p := DumpParser{Seq: seq, Proto: ProtoTCP, Table: &tab, Stats: &st}
		p.Feed(b)
		for _, s := range tab.Sockets {
			if s.Family != FamilyIPv4 && s.Family != FamilyIPv6 {
				t.Fatalf("kept a socket of family %d", s.Family)
			}
			if s.State == 0 || s.State > StateClosing {
				t.Fatalf("kept a socket in state %d", s.State)
			}
			if s.Family == FamilyIPv4 && !s.Src.Addr().Is4() {
				t.Fatalf("ipv4 socket with address %v", s.Src)
			}
		}
		for _, typ := range []uint16{SockDiagByFam, MsgError, 0} {
			ParseLookupReply(Header{Type: typ}, b)
		}
	})
}
