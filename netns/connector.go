package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The kernel's process-event connector (drivers/connector/cn_proc.c,
// include/uapi/linux/cn_proc.h and connector.h). Its messages are read
// here by hand: x/sys/unix has the netlink socket but not these layouts,
// and they are small and fixed.
const (
	cnIdxProc = 1 // CN_IDX_PROC
	cnValProc = 1 // CN_VAL_PROC

	procCnMcastListen = 1 // PROC_CN_MCAST_LISTEN
	procCnMcastIgnore = 2 // PROC_CN_MCAST_IGNORE

	procEventFork = 0x00000001 // PROC_EVENT_FORK
	procEventExec = 0x00000002 // PROC_EVENT_EXEC
	procEventExit = 0x80000000 // PROC_EVENT_EXIT

	nlmsgHdrLen   = 16 // struct nlmsghdr
	cnMsgLen      = 20 // struct cn_msg without its data
	procEventHead = 16 // what, cpu, timestamp_ns of struct proc_event
	nlmsgDone     = 3  // NLMSG_DONE: the type every connector message carries
)

// ProcStart is a process that started: a fork (a new process, not a
// thread) or an exec. Either may have put it in a network namespace no
// one has seen yet: clone(CLONE_NEWNET) at the fork, or `unshare -n`,
// which switches namespace and then execs. With Exit set, it is a
// process that ended instead (its last thread, the thread group leader),
// which may have been the last of its namespace.
type ProcStart struct {
	PID  int32 // thread group id: the process
	Exec bool  // an exec; false for a fork
	Exit bool  // the process exited
}

// ErrMalformed wraps what ParseProcEvents could not read.
var ErrMalformed = errors.New("malformed process connector message")

// ParseProcEvents appends to out the process starts and exits that one
// datagram of the process-event connector reports, and returns it.
// Messages of other connectors, other process events (uid changes,
// comm changes), new threads and threads' exits are skipped. A message whose lengths do not add up ends the parse with
// an error wrapping ErrMalformed; what came before it is kept.
func ParseProcEvents(b []byte, out []ProcStart) ([]ProcStart, error) {
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return out, fmt.Errorf("%w: %d bytes left, shorter than a netlink header", ErrMalformed, len(b))
		}
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if n < nlmsgHdrLen || n > len(b) {
			return out, fmt.Errorf("%w: netlink length %d of %d bytes", ErrMalformed, n, len(b))
		}
		msg := b[nlmsgHdrLen:n]
		// Messages are padded to 4 bytes; the last one may not be.
		adv := (n + 3) &^ 3
		if adv > len(b) {
			adv = len(b)
		}
		b = b[adv:]
		if typ != nlmsgDone {
			continue // NLMSG_NOOP, NLMSG_ERROR acks: nothing to read
		}
		if len(msg) < cnMsgLen {
			return out, fmt.Errorf("%w: connector header of %d bytes", ErrMalformed, len(msg))
		}
		idx := binary.NativeEndian.Uint32(msg[0:4])
		val := binary.NativeEndian.Uint32(msg[4:8])
		dlen := int(binary.NativeEndian.Uint16(msg[16:18]))
		data := msg[cnMsgLen:]
		if dlen > len(data) {
			return out, fmt.Errorf("%w: connector data length %d of %d bytes", ErrMalformed, dlen, len(data))
		}
		data = data[:dlen]
		if idx != cnIdxProc || val != cnValProc {
			continue
		}
		if len(data) < procEventHead {
			return out, fmt.Errorf("%w: process event of %d bytes", ErrMalformed, len(data))
		}
		what := binary.NativeEndian.Uint32(data[0:4])
		ev := data[procEventHead:]
		switch what {
		case procEventFork:
			// parent_pid, parent_tgid, child_pid, child_tgid
			if len(ev) < 16 {
				return out, fmt.Errorf("%w: fork event of %d bytes", ErrMalformed, len(ev))
			}
			pid := int32(binary.NativeEndian.Uint32(ev[8:12]))
			tgid := int32(binary.NativeEndian.Uint32(ev[12:16]))
			if pid == tgid && pid > 0 {
				out = append(out, ProcStart{PID: tgid})
			}
		case procEventExec:
			// process_pid, process_tgid
			if len(ev) < 8 {
				return out, fmt.Errorf("%w: exec event of %d bytes", ErrMalformed, len(ev))
			}
			if tgid := int32(binary.NativeEndian.Uint32(ev[4:8])); tgid > 0 {
				out = append(out, ProcStart{PID: tgid, Exec: true})
			}
		case procEventExit:
			// process_pid, process_tgid, exit_code, exit_signal, …
			if len(ev) < 8 {
				return out, fmt.Errorf("%w: exit event of %d bytes", ErrMalformed, len(ev))
			}
			pid := int32(binary.NativeEndian.Uint32(ev[0:4]))
			tgid := int32(binary.NativeEndian.Uint32(ev[4:8]))
			if pid == tgid && pid > 0 {
				out = append(out, ProcStart{PID: tgid, Exit: true})
			}
		}
	}
	return out, nil
}

// listenMessage returns the netlink message that subscribes (op
// procCnMcastListen) or unsubscribes a socket from process events. The
// four-byte form is the one every kernel since 2.6.15 reads; newer ones
// also take an event filter, which older ones would reject silently.
func listenMessage(op uint32, seq uint32) []byte {
	const n = nlmsgHdrLen + cnMsgLen + 4
	b := make([]byte, n)
	binary.NativeEndian.PutUint32(b[0:4], n)
	binary.NativeEndian.PutUint16(b[4:6], nlmsgDone)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	m := b[nlmsgHdrLen:]
	binary.NativeEndian.PutUint32(m[0:4], cnIdxProc)
	binary.NativeEndian.PutUint32(m[4:8], cnValProc)
	binary.NativeEndian.PutUint32(m[8:12], seq)
	binary.NativeEndian.PutUint16(m[16:18], 4)
	binary.NativeEndian.PutUint32(m[cnMsgLen:], op)
	return b
}
