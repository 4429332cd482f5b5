package sink

import (
	"net/netip"
	"testing"

	"github.com/connlogd/connlogd/snapshot"
)

func TestCommunityID(t *testing.T) {
	for _, tt := range []struct {
		proto    snapshot.Proto
		src, dst string
		want     string // "" for none
	}{
		// The reference vectors of the Community ID specification.
		{snapshot.ProtoTCP, "128.232.110.120:34855", "66.35.250.204:80", "1:LQU9qZlK+B5F3KDmev6m5PMibrg="},
		{snapshot.ProtoTCP, "66.35.250.204:80", "128.232.110.120:34855", "1:LQU9qZlK+B5F3KDmev6m5PMibrg="},
		{snapshot.ProtoUDP, "192.168.1.52:54585", "8.8.8.8:53", "1:d/FP5EW3wiY1vCndhwleRRKHowQ="},
		{snapshot.ProtoTCP, "[2001:470:e5bf:dead:4957:2174:e82c:4887]:63943", "[2607:f8b0:400c:c03::1a]:25", "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="},
		{snapshot.ProtoTCP, "[2607:f8b0:400c:c03::1a]:25", "[2001:470:e5bf:dead:4957:2174:e82c:4887]:63943", "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="},
		// An IPv4 peer of an IPv6 socket hashes as the IPv4 flow it is
		// on the wire.
		{snapshot.ProtoTCP, "[::ffff:128.232.110.120]:34855", "[::ffff:66.35.250.204]:80", "1:LQU9qZlK+B5F3KDmev6m5PMibrg="},
		// A zone does not change the flow.
		{snapshot.ProtoTCP, "[2001:470:e5bf:dead:4957:2174:e82c:4887%eth0]:63943", "[2607:f8b0:400c:c03::1a]:25", "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="},
		// Same address: ports order the tuple.
		{snapshot.ProtoTCP, "127.0.0.1:40000", "127.0.0.1:22", "1:" + mustID(t, "127.0.0.1:22", "127.0.0.1:40000")},
		// No remote end: no flow.
		{snapshot.ProtoTCP, "0.0.0.0:22", "0.0.0.0:0", ""},
		{snapshot.ProtoUDP, "[::]:53", "[::]:0", ""},
		{snapshot.ProtoUDP, "10.0.0.1:53", "10.0.0.2:0", ""},
	} {
		got, ok := appendCommunityID(nil, tt.proto, netip.MustParseAddrPort(tt.src), netip.MustParseAddrPort(tt.dst))
		if string(got) != tt.want || ok != (tt.want != "") {
			t.Errorf("%v %s -> %s: %q %v, want %q", tt.proto, tt.src, tt.dst, got, ok, tt.want)
		}
	}
}

// mustID computes the ID of the ordered tuple, for the symmetric case.
func mustID(t *testing.T, src, dst string) string {
	got, ok := appendCommunityID(nil, snapshot.ProtoTCP, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst))
	if !ok {
		t.Fatal("no ID")
	}
	return string(got[2:])
}
