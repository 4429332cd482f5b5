package netns

import (
	"bytes"
	"strconv"
)

// ParseSockstat reads the "inuse N" and "tw N" counts of the line that
// starts with prefix ("TCP:", "TCP6:", "UDP:") in a /proc/net/sockstat or
// sockstat6 text. ok is false when the line or its inuse count is
// missing or malformed. The daemon uses it to skip the TCP dump of a
// namespace that holds no TCP socket.
func ParseSockstat(b []byte, prefix string) (inuse, tw int, ok bool) {
	fields, found := sockstatLine(b, prefix)
	if !found {
		return 0, 0, false
	}
	for i := 0; i+1 < len(fields); i += 2 {
		v, err := strconv.Atoi(string(fields[i+1]))
		if err != nil {
			return 0, 0, false
		}
		switch string(fields[i]) {
		case "inuse":
			inuse, ok = v, true
		case "tw":
			tw = v
		}
	}
	return inuse, tw, ok
}

// ParseSockstatUsed reads the "sockets: used N" count of a
// /proc/net/sockstat text: every socket of the namespace, of any family,
// bound-only TCP sockets included, which "TCP: inuse" leaves out.
func ParseSockstatUsed(b []byte) (used int, ok bool) {
	fields, found := sockstatLine(b, "sockets:")
	if !found || len(fields) < 2 || string(fields[0]) != "used" {
		return 0, false
	}
	v, err := strconv.Atoi(string(fields[1]))
	if err != nil {
		return 0, false
	}
	return v, true
}

// sockstatLine returns the fields after prefix on the line that starts
// with it.
func sockstatLine(b []byte, prefix string) ([][]byte, bool) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if bytes.HasPrefix(line, []byte(prefix)) {
			return bytes.Fields(line[len(prefix):]), true
		}
	}
	return nil, false
}
