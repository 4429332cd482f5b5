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
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if !bytes.HasPrefix(line, []byte(prefix)) {
			continue
		}
		fields := bytes.Fields(line[len(prefix):])
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
	return 0, 0, false
}
