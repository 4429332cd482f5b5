package differ

import (
	"net/netip"

	"github.com/connlogd/connlogd/snapshot"
)

// record is a tracked socket's last poll, as the Differ keeps it: every
// field of its snapshot.Socket, with the addresses as 16 bytes and a kind
// instead of netip.Addr, whose zone pointer makes an AddrPort 32 bytes and
// the whole tracker memory the garbage collector must scan. A record
// holds no pointer, so neither does the tracker's slice. The Socket is
// rebuilt only for an event, a lookup or a reload's filter. Sockets carry
// no zone (dumps have none), so none is kept. 136 bytes.
type record struct {
	src, dst     [16]byte // As16: IPv4 addresses in their mapped form
	cookie       uint64
	cgroupID     uint64
	info         snapshot.TCPInfo
	ifIndex      uint32
	uid, inode   uint32
	rqueue       uint32
	wqueue       uint32
	sport, dport uint16
	proto        snapshot.Proto
	family       snapshot.Family
	state        snapshot.State
	hasInfo      bool
	kinds        uint8 // addrKind of src, and of dst shifted by 2
	// The differ's own small fields, in what would be padding: misses is
	// how many dumps in a row missed it, phase how far a TCP handshake
	// got as polls saw it.
	misses uint8
	phase  phase
	flags  connFlags
}

// addrKind tells how to rebuild an address from its 16 bytes: invalid (a
// socket built without one, in tests), IPv4, or IPv6 (an IPv4-mapped IPv6
// address stays one).
func addrKind(a netip.Addr) uint8 {
	switch {
	case !a.IsValid():
		return 0
	case a.Is4():
		return 1
	}
	return 2
}

func addrFrom(b [16]byte, kind uint8) netip.Addr {
	switch kind {
	case 1:
		return netip.AddrFrom16(b).Unmap()
	case 2:
		return netip.AddrFrom16(b)
	}
	return netip.Addr{}
}

// recordOf is s's record.
func recordOf(s *snapshot.Socket) record {
	r := record{
		src: s.Src.Addr().As16(), dst: s.Dst.Addr().As16(),
		cookie: s.Cookie, ifIndex: s.IfIndex,
		sport: s.Src.Port(), dport: s.Dst.Port(),
		proto: s.Proto, family: s.Family,
		kinds: addrKind(s.Src.Addr()) | addrKind(s.Dst.Addr())<<2,
	}
	r.update(s)
	return r
}

// update takes what may change in a socket of the same key; the differ's
// fields stay.
func (r *record) update(s *snapshot.Socket) {
	r.state, r.hasInfo = s.State, s.HasInfo
	r.uid, r.inode, r.rqueue, r.wqueue = s.UID, s.Inode, s.RQueue, s.WQueue
	r.cgroupID, r.info = s.CgroupID, s.Info
}

// sameKey reports whether k is the record's key. The cookie, unique per
// socket, decides most comparisons at once.
func (r *record) sameKey(k *snapshot.Key) bool {
	return r.cookie == k.Cookie && r.sport == k.Src.Port() && r.dport == k.Dst.Port() &&
		r.ifIndex == k.IfIndex && r.proto == k.Proto && r.family == k.Family &&
		r.src == k.Src.Addr().As16() && r.dst == k.Dst.Addr().As16() &&
		r.kinds == addrKind(k.Src.Addr())|addrKind(k.Dst.Addr())<<2
}

// key rebuilds the record's key.
func (r *record) key() snapshot.Key {
	return snapshot.Key{
		Proto: r.proto, Family: r.family, IfIndex: r.ifIndex, Cookie: r.cookie,
		Src: netip.AddrPortFrom(addrFrom(r.src, r.kinds&3), r.sport),
		Dst: netip.AddrPortFrom(addrFrom(r.dst, r.kinds>>2), r.dport),
	}
}

// socket rebuilds the socket the record was made of.
func (r *record) socket() snapshot.Socket {
	return snapshot.Socket{
		Key: r.key(), State: r.state, HasInfo: r.hasInfo,
		UID: r.uid, Inode: r.inode, RQueue: r.rqueue, WQueue: r.wqueue,
		CgroupID: r.cgroupID, Info: r.info,
	}
}

// tuple is the record's tupleKey.
func (r *record) tuple() tupleKey {
	return tupleKey{src: r.src, dst: r.dst, sport: r.sport, dport: r.dport, ifIndex: r.ifIndex, proto: r.proto, family: r.family}
}
