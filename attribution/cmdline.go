package attribution

import (
	"strconv"
	"unicode/utf8"
)

// formatCmdline turns the contents of /proc/PID/cmdline (arguments ended
// by NUL bytes; a process that rewrote its title may have none) into one
// line of at most max bytes: NULs become spaces, trailing ones go, and a
// cut never splits a UTF-8 character.
func formatCmdline(raw []byte, max int) string {
	for len(raw) > 0 && (raw[len(raw)-1] == 0 || raw[len(raw)-1] == ' ') {
		raw = raw[:len(raw)-1]
	}
	if len(raw) > max {
		cut := max
		// Back up to the start of a character if the cut falls inside one;
		// invalid bytes are single characters.
		for cut > 0 && cut > max-utf8.UTFMax && !utf8.RuneStart(raw[cut]) {
			cut--
		}
		if !utf8.RuneStart(raw[cut]) {
			cut = max
		}
		raw = raw[:cut]
	}
	out := append([]byte(nil), raw...)
	for i, c := range out {
		if c == 0 {
			out[i] = ' '
		}
	}
	return string(out)
}

// parseSocketLink returns the inode of a /proc/PID/fd link target of the
// form "socket:[INODE]".
func parseSocketLink(target []byte) (uint32, bool) {
	const prefix = "socket:["
	if len(target) <= len(prefix)+1 || string(target[:len(prefix)]) != prefix || target[len(target)-1] != ']' {
		return 0, false
	}
	digits := target[len(prefix) : len(target)-1]
	if len(digits) > 10 {
		return 0, false
	}
	var n uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n == 0 || n > 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

// uidString is the user name of a uid that has none.
func uidString(uid uint32) string { return strconv.FormatUint(uint64(uid), 10) }
