package schematest

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
)

// CommunityID computes a Community ID v1 for the oracle, from the
// specification (community-id-spec): seed, then the endpoints ordered so
// that the lesser address (and, for equal addresses, the lesser port)
// comes first, then the protocol, a zero pad byte and the two ports; the
// SHA-1 of that, base64 or hex. It handles port-based protocols only
// (connlogd reports no ICMP flows).
func CommunityID(seed uint16, proto uint8, saddr, daddr netip.Addr, sport, dport uint16, b64 bool) string {
	if saddr.Less(daddr) || saddr == daddr && sport <= dport {
		// in order
	} else {
		saddr, daddr, sport, dport = daddr, saddr, dport, sport
	}
	buf := binary.BigEndian.AppendUint16(nil, seed)
	buf = append(buf, saddr.AsSlice()...)
	buf = append(buf, daddr.AsSlice()...)
	buf = append(buf, proto, 0)
	buf = binary.BigEndian.AppendUint16(buf, sport)
	buf = binary.BigEndian.AppendUint16(buf, dport)
	sum := sha1.Sum(buf)
	if b64 {
		return "1:" + base64.StdEncoding.EncodeToString(sum[:])
	}
	return "1:" + hex.EncodeToString(sum[:])
}

// Vector is one Community ID test vector of the specification.
type Vector struct {
	Seed         uint16 `json:"seed"`
	Base64       bool   `json:"base64"`
	Proto        uint8  `json:"proto"`
	Saddr        string `json:"saddr"`
	Daddr        string `json:"daddr"`
	Sport        uint16 `json:"sport"`
	Dport        uint16 `json:"dport"`
	CommunityID  string `json:"communityid"`
	Table        string `json:"table"`
	Comment      string `json:"comment"`
	saddr, daddr netip.Addr
}

// Vectors returns the vectors of community-id-tables.json and the three
// baseline files, with the seed and encoding of each.
func Vectors(dir string) ([]Vector, error) {
	var tables struct {
		Vectors []Vector `json:"vectors"`
	}
	if err := readJSON(dir+"/community-id-tables.json", &tables); err != nil {
		return nil, err
	}
	out := tables.Vectors
	for _, f := range []struct {
		name string
		seed uint16
		b64  bool
	}{{"deflt", 0, true}, {"seed1", 1, true}, {"nob64", 0, false}} {
		var vs []Vector
		if err := readJSON(dir+"/community-id-baseline_"+f.name+".json", &vs); err != nil {
			return nil, err
		}
		for i := range vs {
			vs[i].Seed, vs[i].Base64, vs[i].Table = f.seed, f.b64, "baseline_"+f.name
		}
		out = append(out, vs...)
	}
	for i := range out {
		var err1, err2 error
		out[i].saddr, err1 = netip.ParseAddr(out[i].Saddr)
		out[i].daddr, err2 = netip.ParseAddr(out[i].Daddr)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("community id vector %d: bad address %q %q", i, out[i].Saddr, out[i].Daddr)
		}
	}
	return out, nil
}

// Addrs returns the vector's addresses.
func (v *Vector) Addrs() (netip.Addr, netip.Addr) { return v.saddr, v.daddr }

// PortBased reports whether the vector's protocol has ports (TCP, UDP,
// SCTP): the ICMP rows need the specification's type/code mapping.
func (v *Vector) PortBased() bool { return v.Proto == 6 || v.Proto == 17 || v.Proto == 132 }
