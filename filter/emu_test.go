package filter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/connlogd/connlogd/snapshot"
)

// A model of the kernel's side, written from net/ipv4/inet_diag.c
// (inet_diag_bc_audit and inet_diag_bc_run) for the opcodes this package
// emits and a few it does not, so that unit tests can check programs
// without a kernel. The Linux tests check the model's verdicts against
// the real kernel.

var errAudit = errors.New("EINVAL")

// audit accepts what inet_diag_bc_audit accepts.
func audit(bc []byte) error {
	ne := binary.NativeEndian
	if len(bc) < opLen {
		return fmt.Errorf("%w: program of %d bytes", errAudit, len(bc))
	}
	// onChain reports whether offset off is reached from the start by
	// following yes offsets, as valid_cc checks for jump targets.
	onChain := func(off int) bool {
		for at := 0; at <= off && at < len(bc); {
			if at == off {
				return true
			}
			yes := int(bc[at+1])
			if yes < opLen || yes%4 != 0 {
				return false
			}
			at += yes
		}
		return false
	}
	for at := 0; at < len(bc); {
		left := len(bc) - at
		if left < opLen {
			return fmt.Errorf("%w: %d trailing bytes at %d", errAudit, left, at)
		}
		code, yes, no := bc[at], int(bc[at+1]), int(ne.Uint16(bc[at+2:]))
		minLen := opLen
		switch code {
		case bcSCond, bcDCond:
			minLen += hostcondLen
			if left < minLen {
				return fmt.Errorf("%w: short hostcond at %d", errAudit, at)
			}
			alen := 0
			switch bc[at+4] {
			case 0:
			case afInet:
				alen = 4
			case afInet6:
				alen = 16
			default:
				return fmt.Errorf("%w: hostcond family %d at %d", errAudit, bc[at+4], at)
			}
			minLen += alen
			if left < minLen || int(bc[at+5]) > 8*alen {
				return fmt.Errorf("%w: hostcond address at %d", errAudit, at)
			}
		case bcSGE, bcSLE, bcDGE, bcDLE, 11, 12: // 11, 12: S_EQ, D_EQ
			minLen += opLen
			if left < minLen {
				return fmt.Errorf("%w: port comparison without its port at %d", errAudit, at)
			}
		case 0, bcJMP, 6: // NOP, JMP, AUTO
		default:
			return fmt.Errorf("%w: opcode %d at %d", errAudit, code, at)
		}
		if code != 0 {
			if no < minLen || no > left+4 || no%4 != 0 {
				return fmt.Errorf("%w: no offset %d at %d (%d bytes left)", errAudit, no, at, left)
			}
			if no < left && !onChain(at+no) {
				return fmt.Errorf("%w: no offset %d at %d lands off the yes chain", errAudit, no, at)
			}
		}
		if yes < minLen || yes > left+4 || yes%4 != 0 {
			return fmt.Errorf("%w: yes offset %d at %d", errAudit, yes, at)
		}
		at += yes
		if at > len(bc) {
			return fmt.Errorf("%w: yes chain runs past the end", errAudit)
		}
	}
	return nil
}

// run is inet_diag_bc_run on socket s; the program must pass audit.
func run(bc []byte, s *snapshot.Socket) bool {
	ne := binary.NativeEndian
	sport, dport := s.Src.Port(), s.Dst.Port()
	left, at := len(bc), 0
	for left > 0 {
		code, yes, no := bc[at], int(bc[at+1]), int(ne.Uint16(bc[at+2:]))
		ok := true
		switch code {
		case bcJMP:
			ok = false
		case bcSGE:
			ok = sport >= ne.Uint16(bc[at+6:])
		case bcSLE:
			ok = sport <= ne.Uint16(bc[at+6:])
		case bcDGE:
			ok = dport >= ne.Uint16(bc[at+6:])
		case bcDLE:
			ok = dport <= ne.Uint16(bc[at+6:])
		case bcSCond, bcDCond:
			a := s.Src.Addr()
			port := sport
			if code == bcDCond {
				a, port = s.Dst.Addr(), dport
			}
			ok = hostcondRun(bc[at+4:], a, port, s.Family)
		}
		if ok {
			left, at = left-yes, at+yes
		} else {
			left, at = left-no, at+no
		}
	}
	return left == 0
}

// hostcondRun is the kernel's S_COND/D_COND test of address a (of a
// socket of family fam) and port.
func hostcondRun(c []byte, a netip.Addr, port uint16, fam snapshot.Family) bool {
	cfam, bits := c[0], int(c[1])
	cport := int32(binary.NativeEndian.Uint32(c[4:]))
	if cport != -1 && cport != int32(port) {
		return false
	}
	raw := a.AsSlice() // 4 bytes for an IPv4 socket, 16 for IPv6
	switch {
	case cfam == 0:
		return true
	case fam == snapshot.FamilyIPv6 && cfam == afInet:
		if !a.Is4In6() {
			return false
		}
		return bitsMatch(raw[12:], c[8:12], bits)
	case (cfam == afInet) != (fam == snapshot.FamilyIPv4):
		return false
	}
	return bitsMatch(raw, c[8:], bits)
}

func bitsMatch(a, b []byte, bits int) bool {
	for i := 0; bits > 0; i++ {
		mask := byte(0xff)
		if bits < 8 {
			mask = 0xff << (8 - bits)
		}
		if (a[i]^b[i])&mask != 0 {
			return false
		}
		bits -= 8
	}
	return true
}
