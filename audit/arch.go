package audit

import "runtime"

// AUDIT_ARCH values (linux/audit.h): the machine and ABI of a call. A
// 64-bit kernel runs 32-bit programs through a second system call table,
// so one machine has two sets of numbers, and rules name both.
const (
	archX86_64  = 0xc000003e
	archI386    = 0x40000003
	archAArch64 = 0xc00000b7
	archARM     = 0x40000028
)

// abi is one system call table's socket calls.
type abi struct {
	arch       uint32
	name       string // as auditctl spells it with -F arch=
	connect    uint32
	accept     uint32 // 0: the table has none (i386 reaches it through socketcall only)
	accept4    uint32
	socketcall uint32 // 0: the table has none
}

var abis = [...]abi{
	{arch: archX86_64, name: "b64", connect: 42, accept: 43, accept4: 288},
	{arch: archI386, name: "b32", connect: 362, accept4: 364, socketcall: 102},
	{arch: archAArch64, name: "b64", connect: 203, accept: 202, accept4: 242},
	{arch: archARM, name: "b32", connect: 283, accept: 285, accept4: 366},
}

// socketcall(2) call numbers (linux/net.h).
const (
	sysConnect = 3
	sysAccept  = 5
	sysAccept4 = 18
)

func abiOf(arch uint32) *abi {
	for i := range abis {
		if abis[i].arch == arch {
			return &abis[i]
		}
	}
	return nil
}

// interesting reports whether a call may be a socket call this package
// follows (for socketcall, the call number decides).
func interesting(arch, nr uint32) bool {
	a := abiOf(arch)
	if a == nil {
		return false
	}
	switch nr {
	case a.connect, a.accept4:
		return true
	case 0:
		return false
	}
	return nr == a.accept || nr == a.socketcall
}

func isSocketcall(arch, nr uint32) bool {
	a := abiOf(arch)
	return a != nil && a.socketcall != 0 && nr == a.socketcall
}

// opOf names what a call did; a0 is its first argument.
func opOf(arch, nr uint32, a0 uint64) Op {
	a := abiOf(arch)
	switch {
	case a == nil || nr == 0:
		return OpNone
	case nr == a.connect:
		return OpConnect
	case nr == a.accept || nr == a.accept4:
		return OpAccept
	case a.socketcall != 0 && nr == a.socketcall:
		switch a0 {
		case sysConnect:
			return OpConnect
		case sysAccept, sysAccept4:
			return OpAccept
		}
	}
	return OpNone
}

// hostABIs returns the system call tables of this machine: its own and
// the 32-bit one its kernel may run programs with. Rules cover both, or
// a 32-bit program's connections would go unseen.
func hostABIs() []abi {
	switch runtime.GOARCH {
	case "amd64":
		return []abi{abis[0], abis[1]}
	case "386":
		return []abi{abis[1]}
	case "arm64":
		return []abi{abis[2], abis[3]}
	case "arm":
		return []abi{abis[3]}
	}
	return nil
}
