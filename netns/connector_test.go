package netns

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// procMsg builds one connector message as the kernel sends it: a
// netlink header of type NLMSG_DONE, a cn_msg, a proc_event.
func procMsg(idx, val, what uint32, payload ...uint32) []byte {
	ev := make([]byte, procEventHead+4*len(payload))
	binary.NativeEndian.PutUint32(ev[0:4], what)
	binary.NativeEndian.PutUint32(ev[4:8], 1)          // cpu
	binary.NativeEndian.PutUint64(ev[8:16], 123456789) // timestamp
	for i, p := range payload {
		binary.NativeEndian.PutUint32(ev[procEventHead+4*i:], p)
	}
	return nlMsg(nlmsgDone, cnMsg(idx, val, ev))
}

func cnMsg(idx, val uint32, data []byte) []byte {
	m := make([]byte, cnMsgLen+len(data))
	binary.NativeEndian.PutUint32(m[0:4], idx)
	binary.NativeEndian.PutUint32(m[4:8], val)
	binary.NativeEndian.PutUint16(m[16:18], uint16(len(data)))
	copy(m[cnMsgLen:], data)
	return m
}

func nlMsg(typ uint16, body []byte) []byte {
	n := nlmsgHdrLen + len(body)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint32(b[0:4], uint32(n))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	copy(b[nlmsgHdrLen:], body)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestParseProcEvents(t *testing.T) {
	fork := procMsg(cnIdxProc, cnValProc, procEventFork, 10, 10, 11, 11)
	thread := procMsg(cnIdxProc, cnValProc, procEventFork, 10, 10, 12, 10)
	exec := procMsg(cnIdxProc, cnValProc, procEventExec, 13, 13)
	execThread := procMsg(cnIdxProc, cnValProc, procEventExec, 15, 14) // a thread execs: the process is the tgid
	exit := procMsg(cnIdxProc, cnValProc, procEventExit, 11, 11, 0, 0, 10, 10)
	other := procMsg(7, 1, procEventFork, 1, 1, 2, 2) // another connector
	ack := procMsg(cnIdxProc, cnValProc, 0, 0)        // PROC_EVENT_NONE: the reply to LISTEN
	errMsg := nlMsg(2, make([]byte, 20))              // NLMSG_ERROR
	tests := []struct {
		name    string
		in      []byte
		want    []ProcStart
		wantErr bool
	}{
		{"fork of a process", fork, []ProcStart{{PID: 11}}, false},
		{"new thread skipped", thread, nil, false},
		{"exec", exec, []ProcStart{{PID: 13, Exec: true}}, false},
		{"exec by a thread gives its process", execThread, []ProcStart{{PID: 14, Exec: true}}, false},
		{"exit of a process", exit, []ProcStart{{PID: 11, Exit: true}}, false},
		{"exit of a thread skipped", procMsg(cnIdxProc, cnValProc, procEventExit, 12, 11, 0, 0), nil, false},
		{"truncated exit event", procMsg(cnIdxProc, cnValProc, procEventExit, 12), nil, true},
		{"other connector skipped", other, nil, false},
		{"listen ack skipped", ack, nil, false},
		{"netlink error skipped", errMsg, nil, false},
		{"several in one datagram", cat(fork, exit, thread, exec), []ProcStart{{PID: 11}, {PID: 11, Exit: true}, {PID: 13, Exec: true}}, false},
		{"empty", nil, nil, false},
		{"short netlink header keeps what came before", cat(fork, []byte{1, 2, 3}), []ProcStart{{PID: 11}}, true},
		{"netlink length past the end", func() []byte {
			b := cat(exec)
			binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)+4))
			return b
		}(), nil, true},
		{"netlink length below its header", func() []byte {
			b := cat(exec)
			binary.NativeEndian.PutUint32(b[0:4], 4)
			return b
		}(), nil, true},
		{"connector data length past the message", func() []byte {
			b := cat(exec)
			binary.NativeEndian.PutUint16(b[nlmsgHdrLen+16:], 200)
			return b
		}(), nil, true},
		{"truncated fork event", procMsg(cnIdxProc, cnValProc, procEventFork, 10, 10, 11), nil, true},
		{"truncated exec event", procMsg(cnIdxProc, cnValProc, procEventExec, 13), nil, true},
		{"process event without its header", nlMsg(nlmsgDone, cnMsg(cnIdxProc, cnValProc, []byte{1, 0, 0, 0})), nil, true},
		{"connector header truncated", nlMsg(nlmsgDone, make([]byte, 8)), nil, true},
		{"pid 0 skipped", procMsg(cnIdxProc, cnValProc, procEventExec, 0, 0), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProcEvents(tt.in, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The last message of a datagram need not be padded to four bytes.
func TestParseProcEventsUnpaddedLast(t *testing.T) {
	ev := make([]byte, procEventHead+8+2) // an exec event and two stray bytes
	binary.NativeEndian.PutUint32(ev[0:4], procEventExec)
	binary.NativeEndian.PutUint32(ev[procEventHead+4:], 13)
	b := nlMsg(nlmsgDone, cnMsg(cnIdxProc, cnValProc, ev))
	n := int(binary.NativeEndian.Uint32(b[0:4]))
	if n%4 == 0 {
		t.Fatalf("message of %d bytes is aligned: the test proves nothing", n)
	}
	b = cat(procMsg(cnIdxProc, cnValProc, procEventFork, 1, 1, 2, 2), b[:n])
	got, err := ParseProcEvents(b, nil)
	if err != nil || !reflect.DeepEqual(got, []ProcStart{{PID: 2}, {PID: 13, Exec: true}}) {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestListenMessage(t *testing.T) {
	b := listenMessage(procCnMcastListen, 7)
	if n := binary.NativeEndian.Uint32(b[0:4]); int(n) != len(b) || len(b) != nlmsgHdrLen+cnMsgLen+4 {
		t.Fatalf("length %d in a message of %d bytes", n, len(b))
	}
	if typ := binary.NativeEndian.Uint16(b[4:6]); typ != nlmsgDone {
		t.Errorf("type %d, want NLMSG_DONE", typ)
	}
	m := b[nlmsgHdrLen:]
	if idx, val := binary.NativeEndian.Uint32(m[0:4]), binary.NativeEndian.Uint32(m[4:8]); idx != cnIdxProc || val != cnValProc {
		t.Errorf("connector id %d.%d", idx, val)
	}
	if l := binary.NativeEndian.Uint16(m[16:18]); l != 4 {
		t.Errorf("data length %d", l)
	}
	if op := binary.NativeEndian.Uint32(m[cnMsgLen:]); op != procCnMcastListen {
		t.Errorf("op %d", op)
	}
}

func FuzzParseProcEvents(f *testing.F) {
	f.Add(procMsg(cnIdxProc, cnValProc, procEventFork, 10, 10, 11, 11))
	f.Add(cat(procMsg(cnIdxProc, cnValProc, procEventExec, 13, 13), procMsg(cnIdxProc, cnValProc, procEventExit, 1, 1, 0, 0, 1, 1)))
	f.Add(procMsg(7, 1, procEventFork, 1, 1, 2, 2))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseProcEvents(b, nil)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		// Each start takes a whole message of at least a header, a
		// connector header and an exec event.
		if max := len(b) / (nlmsgHdrLen + cnMsgLen + procEventHead + 8); len(got) > max {
			t.Fatalf("%d starts from %d bytes", len(got), len(b))
		}
		for _, s := range got {
			if s.PID <= 0 {
				t.Fatalf("start with pid %d", s.PID)
			}
		}
	})
}
