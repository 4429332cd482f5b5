//go:build linux

package audit

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/filter"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/snapshot"
)

// cookieFinder learns the cookie of the socket a connect made, while the
// socket lives: with it, the socket's events are matched to the call
// exactly, whenever they come. Calls of one uid to one server are
// otherwise told apart only by time and by whether their process still
// holds its socket, which a destroy notification read late (its peer
// slow to close, a busy machine) cannot tell.
//
// It costs a sock_diag dump of the process's namespace that the kernel
// filters to sockets connected to the call's peer, so it runs only for
// a call to a peer another call of the namespace went to within keep:
// the calls that could tie.
type cookieFinder struct {
	keep   time.Duration
	conns  map[uint64]*diag.Conn // by namespace inode
	order  []uint64              // conns, oldest first
	recent map[peerKey]time.Time // the last call to each peer
	tab    snapshot.Table
	// Lookups counts the dumps made.
	Lookups uint64
}

type peerKey struct {
	netns uint64
	peer  netip.AddrPort
}

// maxDiagConns bounds the namespaces a cookieFinder keeps a socket in.
const maxDiagConns = 16

func newCookieFinder(keep time.Duration) *cookieFinder {
	return &cookieFinder{keep: keep, conns: map[uint64]*diag.Conn{}, recent: map[peerKey]time.Time{}}
}

// find returns the cookie of the socket with inode, connected to peer
// (as the call's SOCKADDR gave it: an IPv4-mapped address means an IPv6
// socket), in the namespace of pid; 0 when it need not or cannot.
func (k *cookieFinder) find(pid int32, ns uint64, peer netip.AddrPort, inode uint32, at time.Time) uint64 {
	key := peerKey{ns, netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())}
	last, seen := k.recent[key]
	k.recent[key] = at
	if len(k.recent) > 4096 {
		for p, t := range k.recent {
			if at.Sub(t) > k.keep {
				delete(k.recent, p)
			}
		}
	}
	if !seen || at.Sub(last) > k.keep || inode == 0 || ns == 0 {
		return 0
	}
	c := k.conn(pid, ns)
	if c == nil {
		return 0
	}
	fam := snapshot.FamilyIPv6
	bits := 128
	if peer.Addr().Is4() {
		fam, bits = snapshot.FamilyIPv4, 32
	}
	f, err := filter.New(config.Filters{Include: []config.FilterRule{{
		RemotePorts: []config.PortRange{{Lo: peer.Port(), Hi: peer.Port()}},
		RemoteCIDRs: []netip.Prefix{netip.PrefixFrom(peer.Addr(), bits)},
	}}})
	if err != nil {
		return 0
	}
	bc, _ := f.Bytecode(fam)
	var reqs []diag.Request
	for _, p := range []snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP} {
		reqs = append(reqs, diag.Request{Family: fam, Proto: p, States: snapshot.AllStates, Bytecode: bc})
	}
	k.tab.Reset()
	k.Lookups++
	if err := c.Dump(&k.tab, reqs); err != nil {
		return 0
	}
	for i := range k.tab.Sockets {
		if s := &k.tab.Sockets[i]; s.Inode == inode {
			return s.Cookie
		}
	}
	return 0
}

// conn returns a sock_diag socket in namespace ns, entering it through
// pid's namespace file the first time.
func (k *cookieFinder) conn(pid int32, ns uint64) *diag.Conn {
	if c, ok := k.conns[ns]; ok {
		return c
	}
	n, err := netns.Resolve("/proc/" + strconv.Itoa(int(pid)) + "/ns/net")
	if err != nil || n.ID.Ino != ns {
		return nil // gone, or its pid reused
	}
	var c *diag.Conn
	if err := netns.Do(n, func() (err error) { c, err = diag.Open(); return }); err != nil {
		return nil
	}
	if len(k.order) >= maxDiagConns {
		old := k.order[0]
		k.order = k.order[1:]
		k.conns[old].Close()
		delete(k.conns, old)
	}
	k.conns[ns] = c
	k.order = append(k.order, ns)
	return c
}

func (k *cookieFinder) close() {
	for _, c := range k.conns {
		c.Close()
	}
	k.conns = nil
}
