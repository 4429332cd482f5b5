package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Netlink and sock_diag constants from the Linux UAPI headers.
const (
	NetlinkSockDiag = 4 // NETLINK_SOCK_DIAG (NETLINK_INET_DIAG)

	MsgNoop        = 1  // NLMSG_NOOP
	MsgError       = 2  // NLMSG_ERROR
	MsgDone        = 3  // NLMSG_DONE
	MsgOverrun     = 4  // NLMSG_OVERRUN
	SockDiagByFam  = 20 // SOCK_DIAG_BY_FAMILY
	TCPDiagGetSock = 18 // TCPDIAG_GETSOCK, the inet_diag v1 request
	SockDestroyMsg = 21 // SOCK_DESTROY

	FlagRequest  = 0x1   // NLM_F_REQUEST
	FlagMulti    = 0x2   // NLM_F_MULTI
	FlagDumpIntr = 0x10  // NLM_F_DUMP_INTR
	FlagDump     = 0x300 // NLM_F_ROOT|NLM_F_MATCH

	HeaderLen  = 16 // sizeof(struct nlmsghdr)
	reqV2Len   = 56 // sizeof(struct inet_diag_req_v2)
	DiagMsgLen = 72 // sizeof(struct inet_diag_msg)

	attrReqBytecode = 1  // INET_DIAG_REQ_BYTECODE, in requests
	attrInfo        = 2  // INET_DIAG_INFO
	attrProtocol    = 10 // INET_DIAG_PROTOCOL
	attrCgroupID    = 21 // INET_DIAG_CGROUP_ID
	attrTypeMask    = 0x3fff

	// ExtInfo is the idiag_ext bit asking for INET_DIAG_INFO (tcp_info).
	ExtInfo uint8 = 1 << (attrInfo - 1)
)

// Destroy multicast groups of NETLINK_SOCK_DIAG (enum sknetlink_groups).
const (
	GroupTCP4Destroy = 1
	GroupUDP4Destroy = 2
	GroupTCP6Destroy = 3
	GroupUDP6Destroy = 4
)

// Header is a netlink message header (struct nlmsghdr).
type Header struct {
	Len   uint32
	Type  uint16
	Flags uint16
	Seq   uint32
	PID   uint32
}

// ErrMalformed marks a message that does not parse. Callers count it and go
// on: one bad message must not stop a dump.
var ErrMalformed = errors.New("malformed netlink message")

// ErrnoError is an error the kernel returned in NLMSG_ERROR or NLMSG_DONE.
// Code is the positive errno; package diag turns it into a unix.Errno.
type ErrnoError struct {
	Op   string
	Code int32
}

func (e *ErrnoError) Error() string { return fmt.Sprintf("%s: kernel returned errno %d", e.Op, e.Code) }

// MsgIter walks the netlink messages packed in one datagram.
type MsgIter struct {
	b   []byte
	err error
}

// NewMsgIter returns an iterator over the messages in b.
func NewMsgIter(b []byte) MsgIter { return MsgIter{b: b} }

// Next returns the next message. It returns ok=false at the end of the
// buffer or at the first malformed header; Err then tells which.
func (it *MsgIter) Next() (h Header, payload []byte, ok bool) {
	if len(it.b) == 0 {
		return h, nil, false
	}
	if len(it.b) < HeaderLen {
		it.err = fmt.Errorf("%w: %d trailing bytes, shorter than a header", ErrMalformed, len(it.b))
		it.b = nil
		return h, nil, false
	}
	ne := binary.NativeEndian
	h = Header{
		Len:   ne.Uint32(it.b[0:4]),
		Type:  ne.Uint16(it.b[4:6]),
		Flags: ne.Uint16(it.b[6:8]),
		Seq:   ne.Uint32(it.b[8:12]),
		PID:   ne.Uint32(it.b[12:16]),
	}
	if h.Len < HeaderLen || int(h.Len) > len(it.b) {
		it.err = fmt.Errorf("%w: header length %d, %d bytes left", ErrMalformed, h.Len, len(it.b))
		it.b = nil
		return h, nil, false
	}
	payload = it.b[HeaderLen:h.Len]
	adv := align4(int(h.Len))
	if adv > len(it.b) {
		adv = len(it.b)
	}
	it.b = it.b[adv:]
	return h, payload, true
}

// Err returns the error that stopped the iteration, if any.
func (it *MsgIter) Err() error { return it.err }

func align4(n int) int { return (n + 3) &^ 3 }

// ParseErrno reads the errno of an NLMSG_ERROR or NLMSG_DONE payload. Zero
// means success (an ACK, or a dump that ended well).
func ParseErrno(payload []byte) (int32, error) {
	if len(payload) < 4 {
		return 0, fmt.Errorf("%w: errno payload of %d bytes", ErrMalformed, len(payload))
	}
	code := int32(binary.NativeEndian.Uint32(payload))
	return -code, nil
}

// ParseDiagMsg parses one inet_diag_msg and its attributes into s. proto is
// the protocol the request asked for; an INET_DIAG_PROTOCOL attribute
// overrides it. On error s is left partly filled and must be discarded.
func ParseDiagMsg(payload []byte, proto Proto, s *Socket) error {
	if len(payload) < DiagMsgLen {
		return fmt.Errorf("%w: inet_diag_msg of %d bytes, want %d", ErrMalformed, len(payload), DiagMsgLen)
	}
	ne := binary.NativeEndian
	fam := Family(payload[0])
	var src, dst netip.Addr
	switch fam {
	case FamilyIPv4:
		src = netip.AddrFrom4([4]byte(payload[8:12]))
		dst = netip.AddrFrom4([4]byte(payload[24:28]))
	case FamilyIPv6:
		src = netip.AddrFrom16([16]byte(payload[8:24]))
		dst = netip.AddrFrom16([16]byte(payload[24:40]))
	default:
		return fmt.Errorf("%w: address family %d", ErrMalformed, fam)
	}
	st := State(payload[1])
	switch st {
	case StateNewSynRecv:
		st = StateSynRecv
	case StateBoundInactive:
		st = StateClose
	}
	if st == 0 || st > StateClosing {
		return fmt.Errorf("%w: socket state %d", ErrMalformed, payload[1])
	}
	s.Key = Key{
		Proto:   proto,
		Family:  fam,
		Src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(payload[4:6])),
		Dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(payload[6:8])),
		IfIndex: ne.Uint32(payload[40:44]),
		Cookie:  uint64(ne.Uint32(payload[44:48])) | uint64(ne.Uint32(payload[48:52]))<<32,
	}
	s.State = st
	s.RQueue = ne.Uint32(payload[56:60])
	s.WQueue = ne.Uint32(payload[60:64])
	s.UID = ne.Uint32(payload[64:68])
	s.Inode = ne.Uint32(payload[68:72])
	return parseAttrs(payload[DiagMsgLen:], s)
}

func parseAttrs(b []byte, s *Socket) error {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("%w: %d trailing attribute bytes", ErrMalformed, len(b))
		}
		l := int(ne.Uint16(b[0:2]))
		typ := ne.Uint16(b[2:4]) & attrTypeMask
		if l < 4 || l > len(b) {
			return fmt.Errorf("%w: attribute %d of length %d, %d bytes left", ErrMalformed, typ, l, len(b))
		}
		v := b[4:l]
		switch typ {
		case attrInfo:
			if s.Proto == ProtoTCP {
				parseTCPInfo(v, &s.Info)
				s.HasInfo = true
			}
		case attrCgroupID:
			if len(v) >= 8 {
				s.CgroupID = ne.Uint64(v)
			}
		case attrProtocol:
			if len(v) >= 1 {
				s.Proto = Proto(v[0])
			}
		}
		adv := align4(l)
		if adv > len(b) {
			adv = len(b)
		}
		b = b[adv:]
	}
	return nil
}

// Offsets of struct tcp_info fields (include/uapi/linux/tcp.h). The
// structure only grows at its end, so a field is present when the
// attribute is long enough to hold it (104 bytes on 2.6, 280 on 6.x).
const (
	tiRetransmits   = 2
	tiRTT           = 68
	tiRTTVar        = 72
	tiTotalRetrans  = 100
	tiBytesAcked    = 120
	tiBytesReceived = 128
	tiSegsOut       = 136
	tiSegsIn        = 140
	tiBytesSent     = 200
	tiBytesRetrans  = 208
)

// HasBytes reports whether the kernel sent tcpi_bytes_acked and
// tcpi_bytes_received (Linux 4.1+).
func (ti *TCPInfo) HasBytes() bool { return ti.Len >= tiBytesReceived+8 }

// HasSegs reports whether the kernel sent tcpi_segs_out and tcpi_segs_in
// (Linux 4.2+).
func (ti *TCPInfo) HasSegs() bool { return ti.Len >= tiSegsIn+4 }

func parseTCPInfo(v []byte, ti *TCPInfo) {
	ne := binary.NativeEndian
	*ti = TCPInfo{Len: uint16(min(len(v), 0xffff))}
	u32 := func(off int) uint32 {
		if len(v) >= off+4 {
			return ne.Uint32(v[off:])
		}
		return 0
	}
	u64 := func(off int) uint64 {
		if len(v) >= off+8 {
			return ne.Uint64(v[off:])
		}
		return 0
	}
	if len(v) > tiRetransmits {
		ti.Retransmits = v[tiRetransmits]
	}
	ti.RTT = u32(tiRTT)
	ti.RTTVar = u32(tiRTTVar)
	ti.TotalRetrans = u32(tiTotalRetrans)
	ti.BytesAcked = u64(tiBytesAcked)
	ti.BytesReceived = u64(tiBytesReceived)
	ti.SegsOut = u32(tiSegsOut)
	ti.SegsIn = u32(tiSegsIn)
	ti.BytesSent = u64(tiBytesSent)
	ti.BytesRetrans = u64(tiBytesRetrans)
}

// AppendDumpRequest appends a SOCK_DIAG_BY_FAMILY dump request for one
// family and protocol. bytecode, when not empty, is an inet_diag filter
// program (INET_DIAG_REQ_BYTECODE) the kernel runs on each socket, so
// filtered-out sockets are never sent.
func AppendDumpRequest(b []byte, seq uint32, fam Family, proto Proto, ext uint8, states uint32, bytecode []byte) []byte {
	if fam == FamilyAny && proto == ProtoTCP {
		return appendV1DumpRequest(b, seq, ext, states, bytecode)
	}
	start := len(b)
	b = appendRequest(b, seq, FlagRequest|FlagDump, fam, proto, ext, states, Key{})
	if len(bytecode) == 0 {
		return b
	}
	ne := binary.NativeEndian
	b = ne.AppendUint16(b, uint16(4+len(bytecode)))
	b = ne.AppendUint16(b, attrReqBytecode)
	b = append(b, bytecode...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	ne.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// FamilyAny in a TCP dump request asks for both families in one walk of
// the kernel's TCP hash tables, through the v1 request (TCPDIAG_GETSOCK),
// which the kernel serves with sdiag_family AF_UNSPEC. A v2 request must
// name one family, and each walks the whole host-wide established hash,
// even for a namespace with no socket: one walk instead of two halves the
// dominant cost of polling a quiet namespace.
const FamilyAny Family = 0

// appendV1DumpRequest appends a TCPDIAG_GETSOCK dump (struct
// inet_diag_req): replies come as TCPDIAG_GETSOCK messages holding the
// same inet_diag_msg as SOCK_DIAG_BY_FAMILY replies.
func appendV1DumpRequest(b []byte, seq uint32, ext uint8, states uint32, bytecode []byte) []byte {
	ne := binary.NativeEndian
	start := len(b)
	b = ne.AppendUint32(b, 0) // length, set below
	b = ne.AppendUint16(b, TCPDiagGetSock)
	b = ne.AppendUint16(b, FlagRequest|FlagDump)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	b = append(b, 0, 0, 0, ext) // family (ignored), src_len, dst_len, ext
	b = append(b, make([]byte, 48)...)
	b = ne.AppendUint32(b, states)
	b = ne.AppendUint32(b, 0) // idiag_dbs
	if len(bytecode) > 0 {
		b = ne.AppendUint16(b, uint16(4+len(bytecode)))
		b = ne.AppendUint16(b, attrReqBytecode)
		b = append(b, bytecode...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	ne.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// AppendLookupRequest appends an exact-match request for one socket: the
// kernel answers with the socket, or NLMSG_ERROR ENOENT when it is gone
// (ESTALE when the tuple now belongs to a socket with another cookie).
func AppendLookupRequest(b []byte, seq uint32, k Key, ext uint8) []byte {
	if k.Proto == ProtoUDP {
		// udp_dump_one passes the request's source as the packet's source
		// to the receive-path lookup ("swapped for historical reasons"),
		// so a UDP socket is found by its peer in idiag_src.
		k.Src, k.Dst = k.Dst, k.Src
	}
	return appendRequest(b, seq, FlagRequest, k.Family, k.Proto, ext, AllStates, k)
}

func appendRequest(b []byte, seq uint32, flags uint16, fam Family, proto Proto, ext uint8, states uint32, k Key) []byte {
	ne := binary.NativeEndian
	total := HeaderLen + reqV2Len
	b = ne.AppendUint32(b, uint32(total))
	b = ne.AppendUint16(b, SockDiagByFam)
	b = ne.AppendUint16(b, flags)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0) // the kernel fills in our port id
	b = append(b, byte(fam), byte(proto), ext, 0)
	b = ne.AppendUint32(b, states)
	b = binary.BigEndian.AppendUint16(b, k.Src.Port())
	b = binary.BigEndian.AppendUint16(b, k.Dst.Port())
	b = appendAddr(b, k.Src.Addr())
	b = appendAddr(b, k.Dst.Addr())
	b = ne.AppendUint32(b, k.IfIndex)
	b = ne.AppendUint32(b, uint32(k.Cookie))
	b = ne.AppendUint32(b, uint32(k.Cookie>>32))
	return b
}

func appendAddr(b []byte, a netip.Addr) []byte {
	var raw [16]byte
	switch {
	case a.Is4():
		v := a.As4()
		copy(raw[:], v[:])
	case a.IsValid():
		raw = a.As16()
	}
	return append(b, raw[:]...)
}
