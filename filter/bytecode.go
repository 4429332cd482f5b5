package filter

import (
	"encoding/binary"
	"net/netip"
	"strconv"
)

// inet_diag bytecode (include/uapi/linux/inet_diag.h). A program is a
// sequence of operations, each a 4-byte struct inet_diag_bc_op {u8 code;
// u8 yes; u16 no} and its arguments. The kernel runs it per socket: when
// the condition holds it moves on by yes bytes, else by no bytes. Landing
// exactly on the end accepts the socket; landing past it (end+4) rejects
// it. inet_diag_bc_audit refuses, with EINVAL, any jump that is not
// forward, 4-aligned and onto an operation reached by following yes
// offsets from the start.
const (
	bcJMP   = 1 // always takes no
	bcSGE   = 2 // local port >= arg
	bcSLE   = 3 // local port <= arg
	bcDGE   = 4 // remote port >= arg
	bcDLE   = 5 // remote port <= arg
	bcSCond = 7 // local address in a prefix (struct inet_diag_hostcond)
	bcDCond = 8 // remote address in a prefix

	opLen       = 4          // sizeof(struct inet_diag_bc_op)
	hostcondLen = 8          // sizeof(struct inet_diag_hostcond), before the address
	afInet      = 2          // AF_INET
	afInet6     = 10         // AF_INET6
	anyPort     = 0xffffffff // hostcond port -1: every port

	// maxProgram keeps the attribute (4-byte header and program) within
	// its u16 length, which also bounds every jump.
	maxProgram = 0xffff - 4
)

// Only these opcodes are used: they exist since Linux 2.6, unlike S_EQ,
// D_EQ (4.16) and CGROUP_COND (5.10), so every kernel accepts the program.

// insn is one operation before layout. Its yes offset is its own length,
// so every operation lies on the yes chain the audit follows, and it
// jumps to label no when its condition fails (JMP: always).
type insn struct {
	code byte
	arg  []byte
	no   label
}

// label names a position in the program: labelAccept is the end,
// labelReject is four bytes past it, and the others are placed at an
// instruction index by asm.place. Every label is placed after the
// instructions that jump to it, so jumps are forward.
type label int

const (
	labelAccept label = iota
	labelReject
)

type asm struct {
	insns  []insn
	labels []int // instruction index of each label, -1 until placed
}

func (a *asm) newLabel() label {
	a.labels = append(a.labels, -1)
	return label(len(a.labels) - 1)
}

func (a *asm) place(l label) { a.labels[l] = len(a.insns) }

func (a *asm) emit(code byte, arg []byte, no label) {
	a.insns = append(a.insns, insn{code: code, arg: arg, no: no})
}

// compile turns an expression over ports and addresses (no owner
// conditions) into a program; ok is false when the expression accepts
// every socket, so that no program is needed, or when the program does
// not fit.
func compile(n *node) (code []byte, ok bool) {
	if n.kind == kTrue {
		return nil, false
	}
	a := &asm{labels: []int{-1, -1}}
	a.gen(n, labelAccept, labelReject, labelAccept)
	return a.layout()
}

// gen emits code that goes to t when n holds and to f when it does not,
// where next is the label of the code that follows: a jump to next is
// left out, and conditions fall through (their yes) when they hold.
func (a *asm) gen(n *node, t, f, next label) {
	switch n.kind {
	case kTrue:
		a.jump(t, next)
	case kFalse:
		a.jump(f, next)
	case kNot:
		a.gen(n.kids[0], f, t, next)
	case kAnd:
		last := len(n.kids) - 1
		for _, k := range n.kids[:last] {
			l := a.newLabel()
			a.gen(k, l, f, l)
			a.place(l)
		}
		a.gen(n.kids[last], t, f, next)
	case kOr:
		last := len(n.kids) - 1
		for _, k := range n.kids[:last] {
			l := a.newLabel()
			a.gen(k, t, l, l)
			a.place(l)
		}
		a.gen(n.kids[last], t, f, next)
	case kPort:
		ge, le := byte(bcSGE), byte(bcSLE)
		if n.side == remote {
			ge, le = bcDGE, bcDLE
		}
		// Both comparisons fail to f; the port sits in a second
		// operation's no field.
		if n.lo > 0 {
			a.emit(ge, portArg(n.lo), f)
		}
		if n.hi < 0xffff {
			a.emit(le, portArg(n.hi), f)
		}
		a.jump(t, next)
	case kAddr:
		code := byte(bcSCond)
		if n.side == remote {
			code = bcDCond
		}
		a.emit(code, hostcond(n.prefix), f)
		a.jump(t, next)
	default:
		panic("filter: cannot compile node kind " + strconv.Itoa(int(n.kind)))
	}
}

// jump goes to l unless l is where the code goes anyway.
func (a *asm) jump(l, next label) {
	if l != next {
		a.emit(bcJMP, nil, l)
	}
}

func portArg(p uint16) []byte {
	b := make([]byte, opLen)
	binary.NativeEndian.PutUint16(b[2:], p)
	return b
}

// hostcond encodes struct inet_diag_hostcond and the prefix's address, in
// network order, with the port left out of the comparison.
func hostcond(p netip.Prefix) []byte {
	fam := byte(afInet)
	if p.Addr().Is6() {
		fam = afInet6
	}
	b := []byte{fam, byte(p.Bits()), 0, 0}
	b = binary.NativeEndian.AppendUint32(b, anyPort)
	return append(b, p.Addr().AsSlice()...)
}

// layout assigns offsets and encodes the program.
func (a *asm) layout() ([]byte, bool) {
	pos := make([]int, len(a.insns)+1)
	for i, in := range a.insns {
		pos[i+1] = pos[i] + opLen + len(in.arg)
	}
	end := pos[len(a.insns)]
	if end > maxProgram {
		return nil, false
	}
	target := func(l label) int {
		switch l {
		case labelAccept:
			return end
		case labelReject:
			return end + opLen
		}
		return pos[a.labels[l]]
	}
	ne := binary.NativeEndian
	out := make([]byte, 0, end)
	for i, in := range a.insns {
		yes := opLen + len(in.arg)
		out = append(out, in.code, byte(yes))
		out = ne.AppendUint16(out, uint16(target(in.no)-pos[i]))
		out = append(out, in.arg...)
	}
	return out, true
}
