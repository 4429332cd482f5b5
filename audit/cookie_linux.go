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
// a call to a peer another process's call in the namespace went to
// within keep: the calls that could tie.
type cookieFinder struct {
	keep   time.Duration
	conns  map[uint64]*diag.Conn // by namespace inode
	order  []uint64              // conns, oldest first
	recent map[peerKey]lastCall  // the last call to each peer
	tab    snapshot.Table
	second time.Time // the budget's second, and what it spent
	spent  int
	// Lookups counts the dumps made.
	Lookups uint64
}

type lastCall struct {
	at  time.Time
	pid int32
}

type peerKey struct {
	netns uint64
	peer  netip.AddrPort
}

// maxDiagConns bounds the namespaces a cookieFinder keeps a socket in.
const maxDiagConns = 16

func newCookieFinder(keep time.Duration) *cookieFinder {
	return &cookieFinder{keep: keep, conns: map[uint64]*diag.Conn{}, recent: map[peerKey]lastCall{}}
}

// maxLookups bounds the dumps a second: under a flood of connects to one
// server a dump per batch is already few, and beyond this budget calls
// are matched without cookies.
const maxLookups = 200

// maxBatchLookups bounds the dumps for one batch of records, so that the
// reader gets back to reading (and to Close) soon.
const maxBatchLookups = 8

// resolve sets the cookie of each connect in batch that could tie with
// another call (see the type's doc), with one dump per namespace and peer.
func (k *cookieFinder) resolve(batch []pending) {
	type group struct {
		pid   int32
		ns    uint64
		peer  netip.AddrPort
		calls []int
	}
	var groups []group
	for i := range batch {
		sg := &batch[i].sg
		if sg.Op != OpConnect || sg.Netns == 0 {
			continue
		}
		raw := batch[i].call.Peer
		key := peerKey{sg.Netns, netip.AddrPortFrom(raw.Addr().Unmap(), raw.Port())}
		last, seen := k.recent[key]
		k.recent[key] = lastCall{sg.Time, sg.PID}
		// Calls of one process never tie: its owner is the answer either
		// way.
		if !seen || sg.Time.Sub(last.at) > k.keep || last.pid == sg.PID || sg.Inode == 0 {
			continue
		}
		g := -1
		for j := range groups {
			if groups[j].ns == sg.Netns && groups[j].peer == raw {
				g = j
			}
		}
		if g < 0 {
			groups = append(groups, group{pid: sg.PID, ns: sg.Netns, peer: raw})
			g = len(groups) - 1
		}
		groups[g].calls = append(groups[g].calls, i)
	}
	if len(k.recent) > 4096 {
		now := time.Now()
		for p, t := range k.recent {
			if now.Sub(t.at) > k.keep {
				delete(k.recent, p)
			}
		}
	}
	for n, g := range groups {
		if n >= maxBatchLookups || !k.allow() {
			return
		}
		if !k.dump(g.pid, g.ns, g.peer) {
			continue
		}
		for _, i := range g.calls {
			for j := range k.tab.Sockets {
				if s := &k.tab.Sockets[j]; s.Inode == batch[i].sg.Inode {
					batch[i].sg.Cookie = s.Cookie
					break
				}
			}
		}
	}
}

// allow takes a lookup from the budget of the current second.
func (k *cookieFinder) allow() bool {
	now := time.Now()
	if now.Sub(k.second) >= time.Second {
		k.second, k.spent = now, 0
	}
	if k.spent >= maxLookups {
		return false
	}
	k.spent++
	return true
}

// dump fills tab with the sockets of namespace ns (entered through pid's
// namespace file the first time) connected to peer.
func (k *cookieFinder) dump(pid int32, ns uint64, peer netip.AddrPort) bool {
	c := k.conn(pid, ns)
	if c == nil {
		return false
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
		return false
	}
	bc, _ := f.Bytecode(fam)
	reqs := []diag.Request{
		{Family: fam, Proto: snapshot.ProtoTCP, States: snapshot.AllStates, Bytecode: bc},
		{Family: fam, Proto: snapshot.ProtoUDP, States: snapshot.AllStates, Bytecode: bc},
	}
	k.tab.Reset()
	k.Lookups++
	return c.Dump(&k.tab, reqs) == nil
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
