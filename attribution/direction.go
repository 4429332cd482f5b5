package attribution

import (
	"net/netip"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// class is what a socket's record says of its role, before listeners are
// considered: a direction is recomputed only when the class changes.
type class uint8

const (
	classNone      class = iota // unconnected and not listening (a bound TCP socket)
	classListen                 // TCP LISTEN, or unconnected UDP
	classConnected              // has a remote end
)

// classOf classifies s. A UDP socket is in the table only once bound
// (explicitly, or implicitly by its first send), so an unconnected UDP
// socket is a listener here even when it is a client's.
func classOf(s *snapshot.Socket) class {
	switch {
	case s.Proto == snapshot.ProtoTCP && s.State == snapshot.StateListen:
		return classListen
	case s.Dst.Port() != 0:
		return classConnected
	case s.Proto == snapshot.ProtoUDP && s.Src.Port() != 0:
		return classListen
	}
	return classNone
}

// listenKey groups listeners by what a connected socket must share with
// its listener: protocol, family and local port.
type listenKey struct {
	proto  snapshot.Proto
	family snapshot.Family
	port   uint16
}

// listeners indexes one network namespace's listening sockets.
type listeners struct {
	m map[listenKey][]netip.Addr
}

// reset empties the index, keeping its storage.
func (l *listeners) reset() {
	if l.m == nil {
		l.m = make(map[listenKey][]netip.Addr)
	}
	// Keys unused by the last build go: unconnected UDP clients come and
	// go on random ports, and the map must not keep them all.
	for k, v := range l.m {
		if len(v) == 0 {
			delete(l.m, k)
		} else {
			l.m[k] = v[:0]
		}
	}
}

// add records s, a socket of classListen.
func (l *listeners) add(s *snapshot.Socket) {
	k := listenKey{s.Proto, s.Family, s.Src.Port()}
	l.m[k] = append(l.m[k], s.Src.Addr().WithZone(""))
}

// direction decides the direction of s against the listeners:
//
//   - listen: s is of classListen;
//   - inbound: s is a TCP request socket (syn_recv), or it is connected
//     and a listener of its protocol and family
//     has its local port on its local address or on the wildcard address
//     (a dual-stack [::] listener's IPv4 connections are IPv6 sockets with
//     IPv4-mapped addresses, so they match it);
//   - outbound: any other connected socket;
//   - unknown: the rest (a bound TCP socket that neither listens nor
//     connects).
func (l *listeners) direction(s *snapshot.Socket) event.Direction {
	switch classOf(s) {
	case classListen:
		return event.DirectionListen
	case classNone:
		return event.DirectionUnknown
	}
	if s.Proto == snapshot.ProtoTCP && s.State == snapshot.StateSynRecv {
		// A request socket: only a passive open makes one, whether or not
		// its listener is indexed yet (made since the last dump, or listed
		// in a later chunk of this one).
		return event.DirectionInbound
	}
	local := s.Src.Addr().WithZone("")
	for _, a := range l.m[listenKey{s.Proto, s.Family, s.Src.Port()}] {
		if a == local || a.IsUnspecified() {
			return event.DirectionInbound
		}
	}
	return event.DirectionOutbound
}
