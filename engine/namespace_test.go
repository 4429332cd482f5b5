package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/snapshot"
)

// TestActiveRequestsSkip: the TCP dump is left out only when nothing of
// the family could be in it.
func TestActiveRequestsSkip(t *testing.T) {
	stat := func(used, in4, tw int) string {
		return fmt.Sprintf("sockets: used %d\nTCP: inuse %d orphan 0 tw %d alloc 9 mem 1\nUDP: inuse 0 mem 0\n", used, in4, tw)
	}
	stat6 := func(in6 int) string { return fmt.Sprintf("TCP6: inuse %d\nUDP6: inuse 0\n", in6) }
	type poll struct {
		v4, v6 string
		counts [2][2]int // the table the previous poll left
		want   string    // the TCP requests made
	}
	tests := []struct {
		name  string
		fams  []snapshot.Family
		polls []poll
	}{
		{"empty namespace: dumped once, then skipped", []snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, []poll{
			{stat(3, 0, 0), stat6(0), [2][2]int{}, "any"},
			{stat(3, 0, 0), stat6(0), [2][2]int{}, ""},
		}},
		{"a hashed socket is dumped", []snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, []poll{
			{stat(3, 1, 0), stat6(0), [2][2]int{}, "any"},
			{stat(3, 1, 0), stat6(0), [2][2]int{{1, 0}}, "any"},
		}},
		{"a TIME_WAIT remnant is dumped", []snapshot.Family{snapshot.FamilyIPv4}, []poll{
			{stat(3, 0, 1), stat6(0), [2][2]int{}, "ipv4"},
			{stat(3, 0, 1), stat6(0), [2][2]int{}, "ipv4"},
		}},
		{"a bound socket the last dump found keeps the dump", []snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, []poll{
			{stat(4, 0, 0), stat6(0), [2][2]int{}, "any"},
			{stat(4, 0, 0), stat6(0), [2][2]int{{1, 0}}, "any"},
			{stat(4, 0, 0), stat6(0), [2][2]int{{0, 1}}, "any"},
		}},
		{"a new socket of any kind dumps once more", []snapshot.Family{snapshot.FamilyIPv4}, []poll{
			{stat(3, 0, 0), stat6(0), [2][2]int{}, "ipv4"},
			{stat(3, 0, 0), stat6(0), [2][2]int{}, ""},
			{stat(4, 0, 0), stat6(0), [2][2]int{}, "ipv4"},
			{stat(4, 0, 0), stat6(0), [2][2]int{}, ""},
		}},
		{"per family", []snapshot.Family{snapshot.FamilyIPv4}, []poll{
			{stat(3, 0, 0), stat6(2), [2][2]int{}, "ipv4"},
			{stat(3, 0, 0), stat6(2), [2][2]int{{0, 2}}, ""},
		}},
		{"unreadable counts: always dumped", []snapshot.Family{snapshot.FamilyIPv4}, []poll{
			{"garbage", "", [2][2]int{}, "ipv4"},
			{"garbage", "", [2][2]int{}, "ipv4"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p4, p6 := filepath.Join(dir, "sockstat"), filepath.Join(dir, "sockstat6")
			w := &namespace{
				reqs:    diag.Requests([]snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP}, tt.fams, true),
				statBuf: make([]byte, 512),
			}
			for i, p := range tt.polls {
				if err := os.WriteFile(p4, []byte(p.v4), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p6, []byte(p.v6), 0o644); err != nil {
					t.Fatal(err)
				}
				var err error
				if w.sockstat, err = os.Open(p4); err != nil {
					t.Fatal(err)
				}
				if w.sockstat6, err = os.Open(p6); err != nil {
					t.Fatal(err)
				}
				// What the previous poll counted, as the differ took it.
				w.counts = p.counts
				w.diffed = i > 0
				var got []string
				udp := 0
				for _, r := range w.activeRequests(nil, w.reqs) {
					if r.Proto == snapshot.ProtoUDP {
						udp++
						continue
					}
					got = append(got, map[snapshot.Family]string{snapshot.FamilyAny: "any", snapshot.FamilyIPv4: "ipv4", snapshot.FamilyIPv6: "ipv6"}[r.Family])
				}
				w.sockstat.Close()
				w.sockstat6.Close()
				if g := strings.Join(got, " "); g != p.want {
					t.Errorf("poll %d: TCP requests %q, want %q", i, g, p.want)
				}
				if udp != len(tt.fams) {
					t.Errorf("poll %d: %d UDP requests, want %d", i, udp, len(tt.fams))
				}
			}
		})
	}
}
