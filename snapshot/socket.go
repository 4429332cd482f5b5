package snapshot

import (
	"net/netip"
	"strconv"
)

// Proto is an IP protocol number as sock_diag uses it.
type Proto uint8

// Protocols connlogd dumps.
const (
	ProtoTCP Proto = 6
	ProtoUDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return "proto" + strconv.Itoa(int(p))
}

// Family is a Linux address family number.
type Family uint8

// Families connlogd dumps.
const (
	FamilyIPv4 Family = 2  // AF_INET
	FamilyIPv6 Family = 10 // AF_INET6
)

func (f Family) String() string {
	switch f {
	case FamilyAny:
		return "any"
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	}
	return "family" + strconv.Itoa(int(f))
}

// State is a kernel TCP state (include/net/tcp_states.h). UDP sockets
// report StateEstablished when connected and StateClose otherwise.
type State uint8

// Kernel socket states.
const (
	StateEstablished State = 1
	StateSynSent     State = 2
	StateSynRecv     State = 3
	StateFinWait1    State = 4
	StateFinWait2    State = 5
	StateTimeWait    State = 6
	StateClose       State = 7
	StateCloseWait   State = 8
	StateLastAck     State = 9
	StateListen      State = 10
	StateClosing     State = 11
	// StateNewSynRecv is how the kernel stores a request socket; dumps
	// report it as StateSynRecv, so the parser maps it.
	StateNewSynRecv State = 12
	// StateBoundInactive marks bound, unconnected TCP sockets in the
	// request's state mask (Linux 6.8+); dumps report them as StateClose.
	StateBoundInactive State = 13
)

// AllStates is the idiag_states mask that asks for every socket.
const AllStates uint32 = 0xffffffff

var stateNames = [...]string{
	StateEstablished:   "established",
	StateSynSent:       "syn_sent",
	StateSynRecv:       "syn_recv",
	StateFinWait1:      "fin_wait1",
	StateFinWait2:      "fin_wait2",
	StateTimeWait:      "time_wait",
	StateClose:         "close",
	StateCloseWait:     "close_wait",
	StateLastAck:       "last_ack",
	StateListen:        "listen",
	StateClosing:       "closing",
	StateNewSynRecv:    "syn_recv",
	StateBoundInactive: "close",
}

// String returns the lowercase kernel name used in events.
func (s State) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return "state" + strconv.Itoa(int(s))
}

// ParseState returns the state named by its event name.
func ParseState(name string) (State, bool) {
	for i, n := range stateNames {
		if n == name && i < int(StateNewSynRecv) {
			return State(i), true
		}
	}
	return 0, false
}

// StateNames lists the event names of the states a dump can report, in
// kernel order.
func StateNames() []string {
	out := make([]string, 0, StateClosing)
	for s := StateEstablished; s <= StateClosing; s++ {
		out = append(out, s.String())
	}
	return out
}

// Key identifies one kernel socket. It is comparable, so it can be a map
// key, and it is built without allocating.
type Key struct {
	Proto   Proto
	Family  Family
	IfIndex uint32
	Cookie  uint64
	Src     netip.AddrPort
	Dst     netip.AddrPort
}

// TCPInfo holds the tcp_info fields connlogd reports. Fields the running
// kernel does not send (its tcp_info is shorter) stay zero; Len says how
// many bytes the kernel sent.
type TCPInfo struct {
	Len           uint16
	Retransmits   uint8
	RTT           uint32 // µs
	RTTVar        uint32 // µs
	TotalRetrans  uint32
	BytesAcked    uint64
	BytesReceived uint64
	SegsOut       uint32
	SegsIn        uint32
	BytesSent     uint64 // Linux 4.19+
	BytesRetrans  uint64 // Linux 4.19+
}

// Socket is one socket as a dump reports it. Every poll keeps two per
// socket (the dump and the differ's record), so the fields are ordered
// to leave no padding but the one word after WQueue: 168 bytes.
type Socket struct {
	Key
	State State
	// HasInfo says the dump carried INET_DIAG_INFO for this socket (full
	// TCP sockets only: not request sockets nor TIME_WAIT remnants).
	HasInfo  bool
	UID      uint32
	Inode    uint32
	RQueue   uint32
	WQueue   uint32
	CgroupID uint64 // INET_DIAG_CGROUP_ID, Linux 5.8+; 0 when absent
	Info     TCPInfo
}

// Table is one dump of the socket table. Its slice is reused across polls:
// Reset keeps the capacity.
type Table struct {
	Sockets []Socket
}

// Reset empties the table, keeping its storage.
func (t *Table) Reset() { t.Sockets = t.Sockets[:0] }

// HasTCP reports whether the table holds a TCP socket of each family,
// stopping as soon as it has found both.
func (t *Table) HasTCP() (ipv4, ipv6 bool) {
	for i := range t.Sockets {
		if s := &t.Sockets[i]; s.Proto == ProtoTCP {
			if s.Family == FamilyIPv6 {
				ipv6 = true
			} else {
				ipv4 = true
			}
			if ipv4 && ipv6 {
				break
			}
		}
	}
	return ipv4, ipv6
}

// Len returns the number of sockets in the table.
func (t *Table) Len() int { return len(t.Sockets) }

// Append returns a zeroed slot at the end of the table, growing it when
// needed, so the parser fills records in place.
func (t *Table) Append() *Socket {
	n := len(t.Sockets)
	if n < cap(t.Sockets) {
		t.Sockets = t.Sockets[:n+1]
		s := &t.Sockets[n]
		*s = Socket{}
		return s
	}
	t.Sockets = append(t.Sockets, Socket{})
	return &t.Sockets[n]
}

// DropLast removes the last slot, used when a message fails to parse.
func (t *Table) DropLast() { t.Sockets = t.Sockets[:len(t.Sockets)-1] }
