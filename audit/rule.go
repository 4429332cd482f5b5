package audit

import (
	"encoding/binary"
	"fmt"
)

// Key tags the rules connlogd adds, so that it can tell them from the
// administrator's and remove exactly its own, also those a killed run
// left behind. Records of its rules carry key="connlogd".
const Key = "connlogd"

// struct audit_rule_data (linux/audit.h): flags, action, field_count,
// mask[64], fields[64], values[64], fieldflags[64], buflen, then buflen
// bytes of string values in field order.
const (
	bitmaskWords  = 64
	maxFields     = 64
	ruleFixedSize = 4 * (3 + bitmaskWords + 3*maxFields + 1)

	filterExit  = 0x04       // AUDIT_FILTER_EXIT
	actionAways = 2          // AUDIT_ALWAYS
	opEqual     = 0x40000000 // AUDIT_EQUAL

	fieldArch      = 11  // AUDIT_ARCH
	fieldArg0      = 200 // AUDIT_ARG0
	fieldFilterKey = 210 // AUDIT_FILTERKEY
)

// stringField reports whether a rule field's value is a length into the
// string buffer rather than a number.
func stringField(f uint32) bool {
	switch f {
	case 13, 14, 15, 16, 17, // AUDIT_SUBJ_USER … AUDIT_SUBJ_CLR
		19, 20, 21, 22, 23, // AUDIT_OBJ_USER … AUDIT_OBJ_LEV_HIGH
		105, 107, 112, // AUDIT_WATCH, AUDIT_DIR, AUDIT_EXE
		fieldFilterKey:
		return true
	}
	return false
}

// rule is one exit-filter rule in the form this package adds.
type rule struct {
	arch     uint32
	syscalls []uint32
	a0       uint64 // socketcall's call number; with hasA0
	hasA0    bool
}

// String spells the rule as auditctl would take it, for messages.
func (r rule) String() string {
	a := abiOf(r.arch)
	s := fmt.Sprintf("-a always,exit -F arch=%s", a.name)
	for _, nr := range r.syscalls {
		s += fmt.Sprintf(" -S %d", nr)
	}
	if r.hasA0 {
		s += fmt.Sprintf(" -F a0=%d", r.a0)
	}
	return s + " -k " + Key
}

// ownRules returns the rules connlogd adds on this machine: connect,
// accept and accept4 in each ABI, and in an ABI with socketcall(2) the
// same three through it (one rule per call number, a rule's fields being
// ANDed).
func ownRules() []rule {
	var out []rule
	for _, a := range hostABIs() {
		r := rule{arch: a.arch}
		for _, nr := range []uint32{a.connect, a.accept, a.accept4} {
			if nr != 0 {
				r.syscalls = append(r.syscalls, nr)
			}
		}
		out = append(out, r)
		if a.socketcall != 0 {
			for _, call := range []uint64{sysConnect, sysAccept, sysAccept4} {
				out = append(out, rule{arch: a.arch, syscalls: []uint32{a.socketcall}, a0: call, hasA0: true})
			}
		}
	}
	return out
}

// encode returns the rule as AUDIT_ADD_RULE takes it.
func (r rule) encode() []byte {
	b := make([]byte, ruleFixedSize+len(Key))
	ne := binary.NativeEndian
	put := func(word int, v uint32) { ne.PutUint32(b[4*word:], v) }
	put(0, filterExit)
	put(1, actionAways)
	for _, nr := range r.syscalls {
		put(3+int(nr/32), ne.Uint32(b[4*(3+nr/32):])|1<<(nr%32))
	}
	fields := [][2]uint32{{fieldArch, r.arch}}
	if r.hasA0 {
		fields = append(fields, [2]uint32{fieldArg0, uint32(r.a0)})
	}
	fields = append(fields, [2]uint32{fieldFilterKey, uint32(len(Key))})
	put(2, uint32(len(fields)))
	const fieldsAt, valuesAt, flagsAt = 3 + bitmaskWords, 3 + bitmaskWords + maxFields, 3 + bitmaskWords + 2*maxFields
	for i, f := range fields {
		put(fieldsAt+i, f[0])
		put(valuesAt+i, f[1])
		put(flagsAt+i, opEqual)
	}
	put(3+bitmaskWords+3*maxFields, uint32(len(Key)))
	copy(b[ruleFixedSize:], Key)
	return b
}

// ruleKey returns the key (AUDIT_FILTERKEY) of a rule as AUDIT_LIST_RULES
// returns it, "" when it has none.
func ruleKey(b []byte) (string, error) {
	if len(b) < ruleFixedSize {
		return "", fmt.Errorf("%w: rule of %d bytes", ErrMalformed, len(b))
	}
	ne := binary.NativeEndian
	word := func(i int) uint32 { return ne.Uint32(b[4*i:]) }
	n := word(2)
	buflen := word(3 + bitmaskWords + 3*maxFields)
	if n > maxFields || int(buflen) > len(b)-ruleFixedSize {
		return "", fmt.Errorf("%w: rule with %d fields and %d string bytes in %d", ErrMalformed, n, buflen, len(b))
	}
	buf := b[ruleFixedSize : ruleFixedSize+int(buflen)]
	off := uint32(0)
	for i := range int(n) {
		f, v := word(3+bitmaskWords+i), word(3+bitmaskWords+maxFields+i)
		if !stringField(f) {
			continue
		}
		if v > uint32(len(buf))-off {
			return "", fmt.Errorf("%w: rule string field of %d bytes past its buffer", ErrMalformed, v)
		}
		if f == fieldFilterKey {
			return string(buf[off : off+v]), nil
		}
		off += v
	}
	return "", nil
}

// Status is the kernel's audit state (struct audit_status), as AUDIT_GET
// returns it.
type Status struct {
	Enabled      uint32 // 0 off, 1 on, 2 on and locked (rules immutable until reboot)
	Failure      uint32 // what a lost record does: 0 nothing, 1 printk, 2 panic
	PID          uint32 // auditd's pid, 0 when none is registered
	RateLimit    uint32
	BacklogLimit uint32
	Lost         uint32 // records the kernel dropped, since boot
	Backlog      uint32
}

// Failure modes.
const (
	FailureSilent = 0
	FailurePrintk = 1
	FailurePanic  = 2
)

const (
	statusSize    = 4 * 8 // the fields above and mask; later kernels append more
	statusEnabled = 0x1   // AUDIT_STATUS_ENABLED
)

func parseStatus(b []byte) (Status, error) {
	if len(b) < statusSize {
		return Status{}, fmt.Errorf("%w: audit_status of %d bytes", ErrMalformed, len(b))
	}
	ne := binary.NativeEndian
	w := func(i int) uint32 { return ne.Uint32(b[4*i:]) }
	return Status{Enabled: w(1), Failure: w(2), PID: w(3), RateLimit: w(4), BacklogLimit: w(5), Lost: w(6), Backlog: w(7)}, nil
}

// encodeSetEnabled is the AUDIT_SET payload that changes the enabled
// flag and nothing else: the mask names the one field the kernel reads.
func encodeSetEnabled(v uint32) []byte {
	b := make([]byte, 4*10)
	binary.NativeEndian.PutUint32(b[0:], statusEnabled)
	binary.NativeEndian.PutUint32(b[4:], v)
	return b
}
