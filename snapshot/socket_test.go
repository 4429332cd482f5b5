package snapshot

import "testing"

func TestTableHasTCP(t *testing.T) {
	sock := func(p Proto, f Family) Socket { return Socket{Key: Key{Proto: p, Family: f}} }
	for _, tt := range []struct {
		name   string
		socks  []Socket
		v4, v6 bool
	}{
		{"empty", nil, false, false},
		{"udp only", []Socket{sock(ProtoUDP, FamilyIPv4), sock(ProtoUDP, FamilyIPv6)}, false, false},
		{"tcp ipv4", []Socket{sock(ProtoUDP, FamilyIPv6), sock(ProtoTCP, FamilyIPv4)}, true, false},
		{"tcp ipv6", []Socket{sock(ProtoTCP, FamilyIPv6)}, false, true},
		{"both", []Socket{sock(ProtoTCP, FamilyIPv6), sock(ProtoUDP, FamilyIPv4), sock(ProtoTCP, FamilyIPv4)}, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v4, v6 := (&Table{Sockets: tt.socks}).HasTCP()
			if v4 != tt.v4 || v6 != tt.v6 {
				t.Errorf("HasTCP = %v, %v; want %v, %v", v4, v6, tt.v4, tt.v6)
			}
		})
	}
}
