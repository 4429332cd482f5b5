package sink

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"net/netip"

	"github.com/connlogd/connlogd/snapshot"
)

// appendCommunityID appends the Community ID v1 of a flow (seed 0), as
// Zeek, Suricata and Elastic compute it, so that a connlogd event can be
// joined with their records of the same connection:
//
//	"1:" + base64(sha1(seed(2 bytes, big endian) + saddr + daddr +
//	                   proto(1) + pad(1, zero) + sport(2) + dport(2)))
//
// with the endpoints ordered so that the smaller (address, then port)
// comes first, which makes both directions of a flow hash alike. It
// reports false, appending nothing, when the flow has no remote end
// (listening and unconnected sockets): a half tuple identifies no flow.
//
// It is written here because the maintained Go implementations are
// small unversioned repositories; the algorithm is a dozen lines.
func appendCommunityID(b []byte, proto snapshot.Proto, src, dst netip.AddrPort) ([]byte, bool) {
	if !hasCommunityID(src, dst) {
		return b, false
	}
	sa, da := src.Addr().WithZone(""), dst.Addr().WithZone("")
	// A v6 socket talking to an IPv4 peer puts IPv4 packets on the wire;
	// a sensor hashes those, so hash the plain IPv4 addresses.
	if sa.Is4In6() && da.Is4In6() {
		sa, da = sa.Unmap(), da.Unmap()
	}
	sp, dp := src.Port(), dst.Port()
	if c := sa.Compare(da); c > 0 || (c == 0 && sp > dp) {
		sa, da, sp, dp = da, sa, dp, sp
	}
	var in [2 + 16 + 16 + 2 + 4]byte // seed, two IPv6 addresses, proto and pad, ports
	n := 2                           // seed 0
	if sa.Is4() {
		a, d := sa.As4(), da.As4()
		n += copy(in[n:], a[:])
		n += copy(in[n:], d[:])
	} else {
		a, d := sa.As16(), da.As16()
		n += copy(in[n:], a[:])
		n += copy(in[n:], d[:])
	}
	in[n] = byte(proto)
	n += 2 // and a zero pad byte
	binary.BigEndian.PutUint16(in[n:], sp)
	binary.BigEndian.PutUint16(in[n+2:], dp)
	n += 4
	sum := sha1.Sum(in[:n])
	b = append(b, "1:"...)
	return base64.StdEncoding.AppendEncode(b, sum[:]), true
}

// hasCommunityID reports whether the flow from src to dst has a Community
// ID: a remote end, and both ends of one family once IPv4-mapped pairs
// are taken as IPv4.
func hasCommunityID(src, dst netip.AddrPort) bool {
	sa, da := src.Addr(), dst.Addr()
	if !da.IsValid() || da.IsUnspecified() || dst.Port() == 0 || !sa.IsValid() {
		return false
	}
	return (sa.Is4In6() && da.Is4In6()) || sa.Is4() == da.Is4()
}
