package filter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/snapshot"
)

// dis lists a program's operations, for failure messages.
func dis(bc []byte) string {
	var b strings.Builder
	names := map[byte]string{bcJMP: "jmp", bcSGE: "sport>=", bcSLE: "sport<=", bcDGE: "dport>=", bcDLE: "dport<=", bcSCond: "src in", bcDCond: "dst in"}
	for at := 0; at+opLen <= len(bc); {
		code, yes, no := bc[at], int(bc[at+1]), int(binary.NativeEndian.Uint16(bc[at+2:]))
		arg := ""
		switch code {
		case bcSGE, bcSLE, bcDGE, bcDLE:
			if at+8 <= len(bc) {
				arg = fmt.Sprint(binary.NativeEndian.Uint16(bc[at+6:]))
			}
		case bcSCond, bcDCond:
			if at+yes <= len(bc) && yes >= 12 {
				a, _ := netip.AddrFromSlice(bc[at+12 : at+yes])
				arg = fmt.Sprintf("%s/%d", a, bc[at+5])
			}
		}
		fmt.Fprintf(&b, "  %3d: %-7s %-22s yes %d no %d (-> %d)\n", at, names[code], arg, yes, no, at+no)
		if yes < opLen {
			break
		}
		at += yes
	}
	fmt.Fprintf(&b, "  %3d: accept; %d: reject\n", len(bc), len(bc)+opLen)
	return b.String()
}

// op encodes one inet_diag_bc_op, for expected programs.
func op(code, yes byte, no uint16) []byte {
	return binary.NativeEndian.AppendUint16([]byte{code, yes}, no)
}

func port(p uint16) []byte { return op(0, 0, p) }

func cond4(bits byte, a string) []byte {
	b := []byte{afInet, bits, 0, 0, 0xff, 0xff, 0xff, 0xff}
	return append(b, netip.MustParseAddr(a).AsSlice()...)
}

func cond6(bits byte, a string) []byte {
	b := []byte{afInet6, bits, 0, 0, 0xff, 0xff, 0xff, 0xff}
	return append(b, netip.MustParseAddr(a).AsSlice()...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestBytecodeStructure pins the encoding of small programs, byte for
// byte, as include/uapi/linux/inet_diag.h lays them out.
func TestBytecodeStructure(t *testing.T) {
	v4, v6 := snapshot.FamilyIPv4, snapshot.FamilyIPv6
	tests := []struct {
		name    string
		filters string
		fam     snapshot.Family
		want    []byte // nil: no program
	}{
		{"one local port", "  include:\n    - local_ports: [22]\n", v4, cat(
			// 0: sport >= 22 else reject (16+4-0); 8: sport <= 22 else reject (20-8).
			op(bcSGE, 8, 20), port(22),
			op(bcSLE, 8, 12), port(22),
		)},
		{"open-ended ranges need one comparison", "  include:\n    - remote_ports: [0-1023]\n    - remote_ports: [49152-65535]\n", v4, cat(
			// 0: dport <= 1023 else try 12; 8: accept (jump to 20);
			// 12: dport >= 49152 else reject (24-12).
			op(bcDLE, 8, 12), port(1023),
			op(bcJMP, 4, 12),
			op(bcDGE, 8, 12), port(49152),
		)},
		{"IPv4 prefix", "  include:\n    - remote_cidrs: [10.0.0.0/8]\n", v4, cat(
			op(bcDCond, 16, 20), cond4(8, "10.0.0.0"),
		)},
		{"IPv4 prefix in an IPv6 dump stays (it matches mapped addresses)", "  include:\n    - remote_cidrs: [10.0.0.0/8]\n", v6, cat(
			op(bcDCond, 16, 20), cond4(8, "10.0.0.0"),
		)},
		{"IPv6 prefix", "  include:\n    - local_cidrs: [\"fd00::/8\"]\n", v6, cat(
			op(bcSCond, 28, 32), cond6(8, "fd00::"),
		)},
		{"IPv6 prefix in an IPv4 dump rejects everything", "  include:\n    - local_cidrs: [\"fd00::/8\"]\n", v4,
			op(bcJMP, 4, 8),
		},
		{"exclude: a match jumps to reject", "  exclude:\n    - local_cidrs: [10.0.0.0/8]\n", v4, cat(
			// 0: src in 10/8 else accept (20); 16: reject (24-16).
			op(bcSCond, 16, 20), cond4(8, "10.0.0.0"),
			op(bcJMP, 4, 8),
		)},
		{"loopback in an IPv4 dump", "  exclude:\n    - loopback: true\n", v4, cat(
			// src in 127/8 -> reject, else dst in 127/8 -> reject, else accept.
			op(bcSCond, 16, 20), cond4(8, "127.0.0.0"),
			op(bcJMP, 4, 28),
			op(bcDCond, 16, 20), cond4(8, "127.0.0.0"),
			op(bcJMP, 4, 8),
		)},
		{"conditions and rules", "  include:\n    - local_ports: [22]\n      remote_cidrs: [10.0.0.0/8]\n    - local_ports: [80]\n", v4, cat(
			op(bcSGE, 8, 36), port(22), // 0: else rule 2 (36)
			op(bcSLE, 8, 28), port(22), // 8
			op(bcDCond, 16, 20), cond4(8, "10.0.0.0"), // 16: else rule 2
			op(bcJMP, 4, 20),           // 32: accept (52)
			op(bcSGE, 8, 20), port(80), // 36: else reject (56)
			op(bcSLE, 8, 12), port(80), // 44
		)},
		{"all ports: no program", "  include:\n    - ports: [0-65535]\n", v4, nil},
		{"include by process only: no program", "  include:\n    - process: [nginx]\n", v4, nil},
		{"exclude with a process: not in the kernel", "  exclude:\n    - process: [nginx]\n      local_ports: [80]\n", v4, nil},
		{"zero-length prefix of the dump's family: no program", "  include:\n    - cidrs: [\"::/0\"]\n", v6, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustNew(t, parse(t, tt.filters))
			got, ok := f.Bytecode(tt.fam)
			if ok != (tt.want != nil) || !bytes.Equal(got, tt.want) {
				t.Fatalf("Bytecode(%v) = %v:\n%s\nwant:\n%s", tt.fam, ok, dis(got), dis(tt.want))
			}
			if ok {
				if err := audit(got); err != nil {
					t.Errorf("audit: %v", err)
				}
			}
		})
	}
}

func TestBytecodeIsACopy(t *testing.T) {
	f := mustNew(t, parse(t, "  include:\n    - local_ports: [22]\n"))
	a, _ := f.Bytecode(snapshot.FamilyIPv4)
	a[0] = 0xee
	if b, _ := f.Bytecode(snapshot.FamilyIPv4); b[0] == 0xee {
		t.Error("Bytecode returns the filter's own storage")
	}
}

// TestBytecodeTooLarge: a program past the attribute's u16 length is not
// sent; Match alone filters then.
func TestBytecodeTooLarge(t *testing.T) {
	var rule config.FilterRule
	for i := range 3000 { // 3000 IPv6 host conditions of 28 bytes: 84 KB
		rule.LocalCIDRs = append(rule.LocalCIDRs, netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 15: byte(i), 14: byte(i >> 8)}), 128))
	}
	f := mustNew(t, config.Filters{Include: []config.FilterRule{rule}})
	if bc, ok := f.Bytecode(snapshot.FamilyIPv6); ok {
		t.Fatalf("got a program of %d bytes", len(bc))
	}
	if !f.Match(sock("[fd00::1]:1", "[::]:0")) || f.Match(sock("[fd00::1:1]:1", "[::]:0")) {
		t.Error("Match does not filter without the program")
	}
	// The IPv4 dump's program (reject everything) is still there.
	if bc, ok := f.Bytecode(snapshot.FamilyIPv4); !ok || !bytes.Equal(bc, op(bcJMP, 4, 8)) {
		t.Errorf("IPv4 program %v:\n%s", ok, dis(bc))
	}
}

// TestAuditModel checks the kernel model on programs the kernel refuses,
// the same ones the Linux test sends to the kernel.
func TestAuditModel(t *testing.T) {
	for _, tt := range invalidPrograms {
		if err := audit(tt.code); err == nil {
			t.Errorf("%s: the model accepts it", tt.name)
		}
	}
}

// invalidPrograms are refused by inet_diag_bc_audit with EINVAL.
var invalidPrograms = []struct {
	name string
	code []byte
}{
	{"unknown opcode", op(99, 4, 8)},
	{"yes of zero", op(bcJMP, 0, 8)},
	{"jump past reject", op(bcJMP, 4, 12)},
	{"misaligned jump", op(bcJMP, 4, 6)},
	{"port comparison without its port", op(bcSGE, 4, 8)},
	{"hostcond prefix longer than the address", cat(op(bcSCond, 16, 20), cond4(33, "10.0.0.0"))},
	{"hostcond of unknown family", cat(op(bcSCond, 16, 20), []byte{7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})},
	{"jump into an operation's argument", cat(op(bcJMP, 4, 8), op(bcSGE, 8, 12), port(1))},
	{"truncated", op(bcJMP, 4, 8)[:3]},
}

// TestBytecodeMatchesModel compares Match with the programs, run by the
// kernel model, on random filters and sockets.
func TestBytecodeMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	var ports []config.PortRange
	for _, r := range [][2]uint16{{0, 0}, {22, 22}, {53, 53}, {80, 80}, {443, 443}, {1, 1023}, {8000, 8100}, {49152, 65535}, {65535, 65535}} {
		ports = append(ports, config.PortRange{Lo: r[0], Hi: r[1]})
	}
	prefixes := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "127.0.0.0/8", "0.0.0.0/0", "192.168.0.0/24",
		"::/0", "fd00::/8", "::1/128", "::ffff:10.0.0.0/104", "2001:db8::/32", "::ffff:0:0/96"}
	addrs := []string{"10.1.2.3", "10.9.9.9", "127.0.0.1", "0.0.0.0", "192.168.0.7", "172.16.0.1",
		"::1", "fd00::5", "2001:db8::1", "::ffff:10.1.2.3", "::ffff:127.0.0.1", "::", "::ffff:192.168.0.7"}
	portVals := []uint16{0, 1, 22, 53, 80, 443, 1023, 1024, 8000, 8050, 8100, 8101, 49151, 49152, 65535}

	pickPorts := func() []config.PortRange {
		var out []config.PortRange
		for _, i := range rng.Perm(len(ports))[:1+rng.IntN(3)] {
			out = append(out, ports[i])
		}
		return out
	}
	pickPrefixes := func() []netip.Prefix {
		var out []netip.Prefix
		for _, i := range rng.Perm(len(prefixes))[:1+rng.IntN(3)] {
			out = append(out, netip.MustParsePrefix(prefixes[i]))
		}
		return out
	}
	randRule := func() config.FilterRule {
		var r config.FilterRule
		for r.Loopback == nil && len(r.Ports)+len(r.LocalPorts)+len(r.RemotePorts)+len(r.CIDRs)+len(r.LocalCIDRs)+len(r.RemoteCIDRs)+len(r.Process) == 0 {
			for k := range 8 {
				if rng.IntN(4) != 0 {
					continue
				}
				switch k {
				case 0:
					r.Ports = pickPorts()
				case 1:
					r.LocalPorts = pickPorts()
				case 2:
					r.RemotePorts = pickPorts()
				case 3:
					r.CIDRs = pickPrefixes()
				case 4:
					r.LocalCIDRs = pickPrefixes()
				case 5:
					r.RemoteCIDRs = pickPrefixes()
				case 6:
					b := rng.IntN(2) == 0
					r.Loopback = &b
				case 7:
					r.Process = []string{"p"}
				}
			}
		}
		return r
	}
	randSock := func(fam snapshot.Family) *snapshot.Socket {
		pick := func() netip.Addr {
			for {
				a := netip.MustParseAddr(addrs[rng.IntN(len(addrs))])
				if a.Is4() == (fam == snapshot.FamilyIPv4) {
					return a
				}
			}
		}
		return &snapshot.Socket{Key: snapshot.Key{Family: fam,
			Src: netip.AddrPortFrom(pick(), portVals[rng.IntN(len(portVals))]),
			Dst: netip.AddrPortFrom(pick(), portVals[rng.IntN(len(portVals))])}}
	}

	var programs, accepted, rejected int
	for i := range 2000 {
		var fs config.Filters
		for range rng.IntN(3) {
			fs.Include = append(fs.Include, randRule())
		}
		for range rng.IntN(3) {
			fs.Exclude = append(fs.Exclude, randRule())
		}
		f := mustNew(t, fs)
		for _, fam := range []snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6} {
			bc, ok := f.Bytecode(fam)
			if ok {
				programs++
				if err := audit(bc); err != nil {
					t.Fatalf("filter %d %+v, %v: %v\n%s", i, fs, fam, err, dis(bc))
				}
			}
			for range 50 {
				s := randSock(fam)
				match := f.Match(s)
				// Match runs the expression specialised for the family;
				// the general one must agree.
				if f.local != nil && f.local.eval(s, nil, true) != match {
					t.Fatalf("filter %d %+v, socket %v -> %v: specialised and general expressions differ", i, fs, s.Src, s.Dst)
				}
				kernel := !ok || run(bc, s)
				if match {
					accepted++
				} else {
					rejected++
				}
				if kernel != match {
					t.Fatalf("filter %d %+v, socket %v -> %v: kernel %v, Match %v\n%s", i, fs, s.Src, s.Dst, kernel, match, dis(bc))
				}
				if f.MatchOwner(s, &Owner{Process: "q"}) && !match {
					t.Fatalf("filter %d %+v, socket %v -> %v: MatchOwner wider than Match", i, fs, s.Src, s.Dst)
				}
			}
		}
	}
	// The generator must exercise both verdicts and real programs.
	t.Logf("%d programs; %d sockets accepted, %d rejected", programs, accepted, rejected)
	if programs < 1000 || accepted < 20000 || rejected < 20000 {
		t.Errorf("degenerate test: %d programs, %d accepted, %d rejected", programs, accepted, rejected)
	}
}
