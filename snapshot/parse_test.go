package snapshot

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// loadCapture reads a dump captured by diag's TestCapture: the raw
// datagrams of one dump request, concatenated.
func loadCapture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstSeq(b []byte) uint32 { return binary.NativeEndian.Uint32(b[8:12]) }

func parseCapture(t *testing.T, name string, proto Proto) (*Table, Stats) {
	t.Helper()
	b := loadCapture(t, name)
	var tab Table
	var st Stats
	p := DumpParser{Seq: firstSeq(b), Proto: proto, Table: &tab, Stats: &st}
	done, err := p.Feed(b)
	if err != nil || !done {
		t.Fatalf("%s: done %v err %v", name, done, err)
	}
	return &tab, st
}

func count(tab *Table, f func(*Socket) bool) int {
	n := 0
	for i := range tab.Sockets {
		if f(&tab.Sockets[i]) {
			n++
		}
	}
	return n
}

// The captures hold, per family: a listener on port 4001 (v4) or 4002
// (v6), one established pair that sent "hello", and one TIME_WAIT
// remnant; UDP: a socket bound to 5001/5002 and one connected to it.
func TestParseCapturedTCP(t *testing.T) {
	for _, tc := range []struct {
		file string
		fam  Family
		lo   netip.Addr
		port uint16
	}{
		{"dump_tcp_ipv4.bin", FamilyIPv4, netip.MustParseAddr("127.0.0.1"), 4001},
		{"dump_tcp_ipv6.bin", FamilyIPv6, netip.IPv6Loopback(), 4002},
	} {
		t.Run(tc.file, func(t *testing.T) {
			tab, st := parseCapture(t, tc.file, ProtoTCP)
			if st != (Stats{}) {
				t.Errorf("stats %+v, want zero", st)
			}
			if tab.Len() != 4 {
				t.Fatalf("%d sockets, want 4", tab.Len())
			}
			byState := map[State]int{}
			for _, s := range tab.Sockets {
				byState[s.State]++
				if s.Family != tc.fam || s.Proto != ProtoTCP || s.Src.Addr() != tc.lo || s.Cookie == 0 {
					t.Errorf("bad socket %+v", s.Key)
				}
			}
			if byState[StateListen] != 1 || byState[StateEstablished] != 2 || byState[StateTimeWait] != 1 {
				t.Errorf("states %v", byState)
			}
			ln := tab.Sockets[0]
			for _, s := range tab.Sockets {
				if s.State == StateListen {
					ln = s
				}
			}
			if ln.Src.Port() != tc.port || ln.Dst.Port() != 0 || ln.Inode == 0 {
				t.Errorf("listener %+v", ln)
			}
			sent := count(tab, func(s *Socket) bool {
				return s.State == StateEstablished && s.Dst.Port() == tc.port && s.HasInfo && s.Info.BytesSent == 5 && s.Info.BytesAcked == 6 // tcpi_bytes_acked counts the SYN
			})
			received := count(tab, func(s *Socket) bool {
				return s.State == StateEstablished && s.Src.Port() == tc.port && s.Info.BytesReceived == 5
			})
			if sent != 1 || received != 1 {
				t.Errorf("client with bytes_sent 5: %d, server with bytes_received 5: %d", sent, received)
			}
			tw := count(tab, func(s *Socket) bool { return s.State == StateTimeWait && !s.HasInfo && s.Inode == 0 })
			if tw != 1 {
				t.Errorf("TIME_WAIT remnant without tcp_info and inode: %d", tw)
			}
		})
	}
}

func TestParseCapturedUDP(t *testing.T) {
	for _, tc := range []struct {
		file string
		port uint16
	}{{"dump_udp_ipv4.bin", 5001}, {"dump_udp_ipv6.bin", 5002}} {
		t.Run(tc.file, func(t *testing.T) {
			tab, _ := parseCapture(t, tc.file, ProtoUDP)
			bound := count(tab, func(s *Socket) bool { return s.State == StateClose && s.Src.Port() == tc.port && !s.HasInfo })
			conn := count(tab, func(s *Socket) bool { return s.State == StateEstablished && s.Dst.Port() == tc.port })
			if tab.Len() != 2 || bound != 1 || conn != 1 {
				t.Errorf("%d sockets, bound %d, connected %d", tab.Len(), bound, conn)
			}
		})
	}
}

func TestFeedCountsForeignAndMalformed(t *testing.T) {
	good := loadCapture(t, "dump_udp_ipv4.bin")
	seq := firstSeq(good)
	tests := []struct {
		name      string
		mutate    func(b []byte) []byte
		sockets   int
		done      bool
		malformed uint64
		foreign   uint64
	}{
		{"intact", func(b []byte) []byte { return b }, 2, true, 0, 0},
		{"wrong sequence number on the first message", func(b []byte) []byte {
			binary.NativeEndian.PutUint32(b[8:], seq+1)
			return b
		}, 1, true, 0, 1},
		{"truncated mid-message", func(b []byte) []byte { return b[:100] }, 0, false, 1, 0},
		{"header length beyond the buffer", func(b []byte) []byte {
			binary.NativeEndian.PutUint32(b[0:], 1<<20)
			return b
		}, 0, false, 1, 0},
		{"header length below a header", func(b []byte) []byte {
			binary.NativeEndian.PutUint32(b[0:], 8)
			return b
		}, 0, false, 1, 0},
		{"unknown family in the first socket", func(b []byte) []byte {
			b[HeaderLen] = 99
			return b
		}, 1, true, 1, 0},
		{"bad state in the first socket", func(b []byte) []byte {
			b[HeaderLen+1] = 200
			return b
		}, 1, true, 1, 0},
		{"attribute length overruns its message", func(b []byte) []byte {
			l := binary.NativeEndian.Uint32(b[0:])
			if l <= HeaderLen+DiagMsgLen {
				t.Fatal("capture has no attributes to corrupt")
			}
			binary.NativeEndian.PutUint16(b[HeaderLen+DiagMsgLen:], 0xfff0)
			return b
		}, 1, true, 1, 0},
		{"unexpected message type", func(b []byte) []byte {
			binary.NativeEndian.PutUint16(b[4:], 77)
			return b
		}, 1, true, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(append([]byte(nil), good...))
			var tab Table
			var st Stats
			p := DumpParser{Seq: seq, Proto: ProtoUDP, Table: &tab, Stats: &st}
			done, err := p.Feed(b)
			if err != nil {
				t.Fatal(err)
			}
			if done != tt.done || tab.Len() != tt.sockets || st.Malformed != tt.malformed || st.Foreign != tt.foreign {
				t.Errorf("done %v sockets %d stats %+v; want done %v sockets %d malformed %d foreign %d",
					done, tab.Len(), st, tt.done, tt.sockets, tt.malformed, tt.foreign)
			}
			if tt.malformed > 0 && !errors.Is(p.LastErr, ErrMalformed) {
				t.Errorf("LastErr = %v, want ErrMalformed", p.LastErr)
			}
		})
	}
}

func msg(typ uint16, seq uint32, payload []byte) []byte {
	var b []byte
	ne := binary.NativeEndian
	b = ne.AppendUint32(b, uint32(HeaderLen+len(payload)))
	b = ne.AppendUint16(b, typ)
	b = ne.AppendUint16(b, 0)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	return append(b, payload...)
}

func errnoPayload(code int32) []byte {
	return binary.NativeEndian.AppendUint32(nil, uint32(-code))
}

func TestFeedKernelErrors(t *testing.T) {
	var tab Table
	var st Stats
	p := DumpParser{Seq: 9, Table: &tab, Stats: &st}
	_, err := p.Feed(msg(MsgError, 9, append(errnoPayload(2), make([]byte, 16)...)))
	var ee *ErrnoError
	if !errors.As(err, &ee) || ee.Code != 2 {
		t.Errorf("NLMSG_ERROR: err %v", err)
	}
	done, err := p.Feed(msg(MsgDone, 9, errnoPayload(4)))
	if !done || !errors.As(err, &ee) || ee.Code != 4 {
		t.Errorf("NLMSG_DONE with errno: done %v err %v", done, err)
	}
	done, err = p.Feed(msg(MsgDone, 9, errnoPayload(0)))
	if !done || err != nil {
		t.Errorf("NLMSG_DONE: done %v err %v", done, err)
	}
}

func TestParseTCPInfoByLength(t *testing.T) {
	full := make([]byte, 280)
	ne := binary.NativeEndian
	ne.PutUint32(full[tiRTT:], 1500)
	ne.PutUint32(full[tiTotalRetrans:], 3)
	ne.PutUint64(full[tiBytesAcked:], 1000)
	ne.PutUint64(full[tiBytesReceived:], 2000)
	ne.PutUint64(full[tiBytesSent:], 3000)
	tests := []struct {
		name string
		len  int
		want TCPInfo
	}{
		{"Linux 2.6: 104 bytes", 104, TCPInfo{Len: 104, RTT: 1500, TotalRetrans: 3}},
		{"Linux 4.1: 144 bytes", 144, TCPInfo{Len: 144, RTT: 1500, TotalRetrans: 3, BytesAcked: 1000, BytesReceived: 2000}},
		{"Linux 4.19+: 232 bytes", 232, TCPInfo{Len: 232, RTT: 1500, TotalRetrans: 3, BytesAcked: 1000, BytesReceived: 2000, BytesSent: 3000}},
		{"Linux 6.x: 280 bytes", 280, TCPInfo{Len: 280, RTT: 1500, TotalRetrans: 3, BytesAcked: 1000, BytesReceived: 2000, BytesSent: 3000}},
		{"cut inside bytes_sent", 204, TCPInfo{Len: 204, RTT: 1500, TotalRetrans: 3, BytesAcked: 1000, BytesReceived: 2000}},
		{"empty", 0, TCPInfo{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got TCPInfo
			parseTCPInfo(full[:tt.len], &got)
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestLookupRequestSwapsUDPTuple(t *testing.T) {
	k := Key{Proto: ProtoUDP, Family: FamilyIPv4,
		Src: netip.MustParseAddrPort("127.0.0.1:5000"), Dst: netip.MustParseAddrPort("127.0.0.2:53"), Cookie: 0x0102030405060708}
	b := AppendLookupRequest(nil, 1, k, 0)
	id := b[HeaderLen+8:]
	if sport := binary.BigEndian.Uint16(id[0:]); sport != 53 {
		t.Errorf("UDP request idiag_sport = %d, want the peer's 53", sport)
	}
	k.Proto = ProtoTCP
	b = AppendLookupRequest(nil, 1, k, 0)
	id = b[HeaderLen+8:]
	if sport := binary.BigEndian.Uint16(id[0:]); sport != 5000 {
		t.Errorf("TCP request idiag_sport = %d, want the local 5000", sport)
	}
	if c := uint64(ne32(id[40:])) | uint64(ne32(id[44:]))<<32; c != k.Cookie {
		t.Errorf("cookie %x", c)
	}
	if len(b) != HeaderLen+reqV2Len || binary.NativeEndian.Uint32(b) != uint32(len(b)) {
		t.Errorf("request length %d", len(b))
	}
}

func ne32(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }

func TestStateNames(t *testing.T) {
	for _, n := range StateNames() {
		s, ok := ParseState(n)
		if !ok || s.String() != n {
			t.Errorf("%s round-trips to %v %v", n, s, ok)
		}
	}
	if len(StateNames()) != 11 {
		t.Errorf("%d state names, want 11", len(StateNames()))
	}
	if _, ok := ParseState("new_syn_recv"); ok {
		t.Error("internal state name accepted")
	}
}

func BenchmarkParseDump(b *testing.B) {
	raw := loadCapture(b, "dump_tcp_ipv4.bin")
	seq := firstSeq(raw)
	var tab Table
	var st Stats
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		tab.Reset()
		p := DumpParser{Seq: seq, Proto: ProtoTCP, Table: &tab, Stats: &st}
		p.Feed(raw)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/4, "ns/socket")
}

// TestParseLookupReplyTimeWait: a reply whose socket is in TIME_WAIT is
// the connection's remnant; any other state is the socket alive.
func TestParseLookupReplyTimeWait(t *testing.T) {
	msg := make([]byte, DiagMsgLen)
	for st, want := range map[State]LookupResult{StateTimeWait: LookupTimeWait, StateEstablished: LookupAlive, StateFinWait2: LookupAlive} {
		msg[1] = byte(st)
		got, err := ParseLookupReply(Header{Type: SockDiagByFam}, msg)
		if err != nil || got != want {
			t.Errorf("state %s: %v, %v; want %v", st, got, err, want)
		}
	}
}
