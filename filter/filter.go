// Package filter decides which sockets connlogd reports, from the
// configuration's filters section (docs/filters.md).
//
// A Filter is one boolean expression over a socket's ports and addresses
// and its owner's process and user. It is evaluated at three places, each
// at least as wide as the next, so that together they decide exactly as
// the full expression does:
//
//   - Bytecode: the port and address part, compiled to an inet_diag
//     program the kernel runs during dumps, so that sockets it rejects are
//     never sent;
//   - Match: the same part in userspace, for the sockets of destroy
//     notifications (the kernel does not filter those) and of dumps sent
//     without a program;
//   - MatchOwner: everything, process and user included, for events whose
//     owner attribution knows.
//
// Conditions a place cannot evaluate are taken there in the sense that
// reports more: an owner condition counts as met in an include rule and as
// unmet in an exclude rule. A filter can therefore only hide a socket that
// it knows is to be hidden.
package filter

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/snapshot"
)

// Owner is what socket attribution knows of the process that owns a
// socket. Empty fields are unknown.
type Owner struct {
	Process string // process name
	User    string // user name
	UID     uint32
	HasUID  bool // UID is known
}

// Filter is a compiled filters section. It is immutable, so safe for
// concurrent use. A nil *Filter reports every socket.
type Filter struct {
	full  *node // every condition; nil when there are no rules
	local *node // full with the owner conditions widened away: Match
	// local4 and local6 are local for the sockets of one family, with
	// what is constant for them folded: what the kernel programs do.
	local4, local6 *node
	owner          bool // some rule has process or user conditions
	progs          map[snapshot.Family]program
}

type program struct {
	code []byte
	ok   bool
}

// New compiles a filters section. It fails only on rules that
// config.Parse would have refused.
func New(c config.Filters) (*Filter, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	f := &Filter{progs: map[snapshot.Family]program{}}
	if c.IsZero() {
		return f, nil
	}
	include := trueNode
	if len(c.Include) > 0 {
		var alts []*node
		for i := range c.Include {
			alts = append(alts, ruleNode(&c.Include[i]))
		}
		include = or(alts...)
	}
	var excl []*node
	for i := range c.Exclude {
		excl = append(excl, ruleNode(&c.Exclude[i]))
	}
	f.full = simplify(and(include, not(or(excl...))))
	f.owner = f.full.hasOwner()
	f.local = simplify(widen(f.full, true))
	f.local4 = simplify(specialize(f.local, snapshot.FamilyIPv4))
	f.local6 = simplify(specialize(f.local, snapshot.FamilyIPv6))
	for fam, n := range map[snapshot.Family]*node{snapshot.FamilyIPv4: f.local4, snapshot.FamilyIPv6: f.local6} {
		code, ok := compile(n)
		f.progs[fam] = program{code, ok}
	}
	return f, nil
}

// Match reports whether s may be reported as far as its ports and
// addresses tell. It decides what the kernel program decides, so it is
// to be applied to the sockets of destroy notifications and of dumps
// sent without a program, before the differ sees them; on a dump that
// carried the program it changes nothing.
func (f *Filter) Match(s *snapshot.Socket) bool {
	if f == nil || f.local == nil {
		return true
	}
	n := f.local
	switch s.Family {
	case snapshot.FamilyIPv4:
		n = f.local4
	case snapshot.FamilyIPv6:
		n = f.local6
	}
	return n.eval(s, nil, true)
}

// NeedsOwner reports whether some rule has process or user conditions.
// When it is false, MatchOwner is Match and need not be called.
func (f *Filter) NeedsOwner() bool { return f != nil && f.owner }

// MatchOwner reports whether an event about socket s, whose owner is o
// (nil when unknown), is to be reported: the whole filter, process and
// user conditions included. A condition on an unknown owner field is taken
// in the sense that reports the event.
func (f *Filter) MatchOwner(s *snapshot.Socket, o *Owner) bool {
	if f == nil || f.full == nil {
		return true
	}
	return f.full.eval(s, o, true)
}

// Bytecode returns the kernel program (INET_DIAG_REQ_BYTECODE) for dumps
// of family fam, and whether there is one to send. The program accepts
// exactly the sockets of that family that Match accepts. It is absent
// when it would accept every socket, and when it would not fit a netlink
// attribute (a few thousand prefixes): Match must filter that dump then.
// The slice is the caller's.
func (f *Filter) Bytecode(fam snapshot.Family) ([]byte, bool) {
	if f == nil {
		return nil, false
	}
	p := f.progs[fam]
	if !p.ok {
		return nil, false
	}
	return slices.Clone(p.code), true
}

type kind uint8

const (
	kTrue kind = iota
	kFalse
	kAnd
	kOr
	kNot
	kPort    // side's port in [lo, hi]
	kAddr    // side's address in prefix
	kProcess // owner's process name in names
	kUser    // owner's user in names or uids
)

type side uint8

const (
	local side = iota
	remote
)

// node is an expression over one socket and its owner.
type node struct {
	kind   kind
	side   side
	lo, hi uint16
	prefix netip.Prefix
	names  []string
	uids   []uint32
	kids   []*node
}

var (
	trueNode  = &node{kind: kTrue}
	falseNode = &node{kind: kFalse}
)

func and(kids ...*node) *node { return &node{kind: kAnd, kids: kids} }
func or(kids ...*node) *node  { return &node{kind: kOr, kids: kids} }
func not(n *node) *node       { return &node{kind: kNot, kids: []*node{n}} }

// Loopback networks. An IPv4 prefix also matches IPv4-mapped addresses of
// IPv6 sockets, so these two cover ::ffff:127.0.0.0/104 too.
var (
	loopback4 = netip.MustParsePrefix("127.0.0.0/8")
	loopback6 = netip.MustParsePrefix("::1/128")
)

// ruleNode is the conjunction of a rule's conditions.
func ruleNode(r *config.FilterRule) *node {
	var conds []*node
	ports := func(sides []side, ranges []config.PortRange) {
		if len(ranges) == 0 {
			return
		}
		var alts []*node
		for _, pr := range ranges {
			for _, sd := range sides {
				alts = append(alts, portNode(sd, pr))
			}
		}
		conds = append(conds, or(alts...))
	}
	addrs := func(sides []side, prefixes []netip.Prefix) {
		if len(prefixes) == 0 {
			return
		}
		var alts []*node
		for _, p := range prefixes {
			for _, sd := range sides {
				alts = append(alts, &node{kind: kAddr, side: sd, prefix: p})
			}
		}
		conds = append(conds, or(alts...))
	}
	both := []side{local, remote}
	ports(both, r.Ports)
	ports([]side{local}, r.LocalPorts)
	ports([]side{remote}, r.RemotePorts)
	addrs(both, r.CIDRs)
	addrs([]side{local}, r.LocalCIDRs)
	addrs([]side{remote}, r.RemoteCIDRs)
	if r.Loopback != nil {
		var alts []*node
		for _, sd := range both {
			alts = append(alts, &node{kind: kAddr, side: sd, prefix: loopback4}, &node{kind: kAddr, side: sd, prefix: loopback6})
		}
		lo := or(alts...)
		if !*r.Loopback {
			lo = not(lo)
		}
		conds = append(conds, lo)
	}
	if len(r.Process) > 0 {
		conds = append(conds, &node{kind: kProcess, names: slices.Clone(r.Process)})
	}
	if len(r.User) > 0 {
		n := &node{kind: kUser}
		for _, u := range r.User {
			if id, err := strconv.ParseUint(u, 10, 32); err == nil {
				n.uids = append(n.uids, uint32(id))
			} else {
				n.names = append(n.names, u)
			}
		}
		conds = append(conds, n)
	}
	return and(conds...)
}

func portNode(sd side, pr config.PortRange) *node {
	if pr.Lo == 0 && pr.Hi == 0xffff {
		return trueNode
	}
	return &node{kind: kPort, side: sd, lo: pr.Lo, hi: pr.Hi}
}

// eval decides n for s and owner o. pos says whether n sits under an even
// number of negations: an unknown owner condition evaluates to pos, which
// is the value that makes the whole expression report more.
func (n *node) eval(s *snapshot.Socket, o *Owner, pos bool) bool {
	switch n.kind {
	case kTrue:
		return true
	case kFalse:
		return false
	case kAnd:
		for _, k := range n.kids {
			if !k.eval(s, o, pos) {
				return false
			}
		}
		return true
	case kOr:
		for _, k := range n.kids {
			if k.eval(s, o, pos) {
				return true
			}
		}
		return false
	case kNot:
		return !n.kids[0].eval(s, o, !pos)
	case kPort:
		p := s.Src.Port()
		if n.side == remote {
			p = s.Dst.Port()
		}
		return n.lo <= p && p <= n.hi
	case kAddr:
		a := s.Src.Addr()
		if n.side == remote {
			a = s.Dst.Addr()
		}
		return prefixMatch(n.prefix, a)
	case kProcess:
		if o == nil || o.Process == "" {
			return pos
		}
		return slices.Contains(n.names, o.Process)
	case kUser:
		if o == nil {
			return pos
		}
		if (o.User != "" && slices.Contains(n.names, o.User)) || (o.HasUID && slices.Contains(n.uids, o.UID)) {
			return true
		}
		if (len(n.names) > 0 && o.User == "") || (len(n.uids) > 0 && !o.HasUID) {
			return pos // what is known does not match; what is not might
		}
		return false
	}
	panic("filter: unknown node kind " + strconv.Itoa(int(n.kind)))
}

// prefixMatch is the kernel's host condition: an IPv4 prefix matches IPv4
// addresses and IPv4-mapped IPv6 ones; an IPv6 prefix matches IPv6
// addresses only.
func prefixMatch(p netip.Prefix, a netip.Addr) bool {
	if p.Addr().Is4() && a.Is4In6() {
		a = a.Unmap()
	}
	return p.Contains(a)
}

func (n *node) hasOwner() bool {
	if n.kind == kProcess || n.kind == kUser {
		return true
	}
	return slices.ContainsFunc(n.kids, (*node).hasOwner)
}

// widen replaces the owner conditions by the constant that reports more:
// true under an even number of negations (pos), false under an odd one.
func widen(n *node, pos bool) *node {
	switch n.kind {
	case kProcess, kUser:
		if pos {
			return trueNode
		}
		return falseNode
	case kNot:
		return not(widen(n.kids[0], !pos))
	case kAnd, kOr:
		kids := make([]*node, len(n.kids))
		for i, k := range n.kids {
			kids[i] = widen(k, pos)
		}
		return &node{kind: n.kind, kids: kids}
	}
	return n
}

// specialize folds the address conditions that are constant for every
// socket of family fam, as the kernel would decide them: an IPv6 prefix
// never matches an IPv4 socket, and a zero-length prefix of the socket's
// own family matches every socket.
func specialize(n *node, fam snapshot.Family) *node {
	switch n.kind {
	case kAddr:
		is4 := n.prefix.Addr().Is4()
		switch {
		case fam == snapshot.FamilyIPv4 && !is4:
			return falseNode
		case n.prefix.Bits() == 0 && is4 == (fam == snapshot.FamilyIPv4):
			return trueNode
		}
	case kNot, kAnd, kOr:
		kids := make([]*node, len(n.kids))
		for i, k := range n.kids {
			kids[i] = specialize(k, fam)
		}
		return &node{kind: n.kind, kids: kids}
	}
	return n
}

// simplify folds constants, flattens nested and/or, and removes double
// negations, so that the kernel program stays short.
func simplify(n *node) *node {
	switch n.kind {
	case kAnd, kOr:
		unit, zero := kTrue, kFalse // and: true is neutral, false absorbs
		if n.kind == kOr {
			unit, zero = kFalse, kTrue
		}
		var kids []*node
		for _, k := range n.kids {
			k = simplify(k)
			switch k.kind {
			case unit:
				continue
			case zero:
				return k
			case n.kind:
				kids = append(kids, k.kids...)
				continue
			}
			kids = append(kids, k)
		}
		switch len(kids) {
		case 0:
			if unit == kTrue {
				return trueNode
			}
			return falseNode
		case 1:
			return kids[0]
		}
		return &node{kind: n.kind, kids: kids}
	case kNot:
		k := simplify(n.kids[0])
		switch k.kind {
		case kTrue:
			return falseNode
		case kFalse:
			return trueNode
		case kNot:
			return k.kids[0]
		}
		return not(k)
	}
	return n
}
