package netns

import "testing"

func TestParseSockstat(t *testing.T) {
	const v4 = "sockets: used 12\nTCP: inuse 3 orphan 0 tw 7 alloc 9 mem 1\nUDP: inuse 2 mem 0\nUDPLITE: inuse 0\n"
	const v6 = "TCP6: inuse 5\nUDP6: inuse 1\n"
	tests := []struct {
		name, text, prefix string
		inuse, tw          int
		ok                 bool
	}{
		{"tcp line with time-wait", v4, "TCP:", 3, 7, true},
		{"udp line", v4, "UDP:", 2, 0, true},
		{"prefix is not a substring match", v4, "UDPLITE:", 0, 0, true},
		{"ipv6 file", v6, "TCP6:", 5, 0, true},
		{"missing line", v6, "TCP:", 0, 0, false},
		{"malformed count", "TCP: inuse x tw 1\n", "TCP:", 0, 0, false},
		{"no inuse", "TCP: orphan 0\n", "TCP:", 0, 0, false},
		{"no trailing newline", "TCP: inuse 1 tw 0", "TCP:", 1, 0, true},
		{"empty", "", "TCP:", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inuse, tw, ok := ParseSockstat([]byte(tt.text), tt.prefix)
			if inuse != tt.inuse || tw != tt.tw || ok != tt.ok {
				t.Errorf("got %d %d %v, want %d %d %v", inuse, tw, ok, tt.inuse, tt.tw, tt.ok)
			}
		})
	}
}

func TestParseSockstatUsed(t *testing.T) {
	tests := []struct {
		name, text string
		used       int
		ok         bool
	}{
		{"first line", "sockets: used 12\nTCP: inuse 3\n", 12, true},
		{"zero", "sockets: used 0\n", 0, true},
		{"missing", "TCP: inuse 3\n", 0, false},
		{"other key", "sockets: free 3\n", 0, false},
		{"malformed", "sockets: used x\n", 0, false},
		{"truncated", "sockets: used", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used, ok := ParseSockstatUsed([]byte(tt.text))
			if used != tt.used || ok != tt.ok {
				t.Errorf("got %d %v, want %d %v", used, ok, tt.used, tt.ok)
			}
		})
	}
}
