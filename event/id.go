package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
)

// ID identifies one event: unique among the events of one host, and the
// same every time that event is written, to every sink and schema, and
// when a sink delivers it again (a RELP or TCP resend), so that a
// pipeline can drop the copies.
//
// It is derived from the event rather than counted: a counter would
// restart with the daemon (or need the state file, which a crash does
// not write) and give a new event the id of an old one, which a
// deduplicating pipeline would then drop. What makes an event unique is
// the boot (socket cookies are unique only within one), the socket's
// cookie, the kind, and the time, which no two events of one socket and
// kind share; a gap has no socket, and its namespace, reason and count
// stand in for it. Those go through SHA-256, of which the first 128 bits
// are the id: a collision between two events is as likely as between two
// random UUIDs.
type ID [16]byte

// IsZero reports whether id was never set.
func (id ID) IsZero() bool { return id == ID{} }

// AppendText appends id as 32 lowercase hex digits.
func (id ID) AppendText(b []byte) ([]byte, error) { return hex.AppendEncode(b, id[:]), nil }

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// BootID is the kernel's boot id (/proc/sys/kernel/random/boot_id), the
// scope of socket cookies.
type BootID [16]byte

// ReadBootID reads the running kernel's boot id.
func ReadBootID() (BootID, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return BootID{}, fmt.Errorf("read boot id: %w", err)
	}
	return ParseBootID(string(bytes.TrimSpace(b)))
}

// ParseBootID parses a boot id in the kernel's UUID form.
func ParseBootID(s string) (BootID, error) {
	var id BootID
	h := make([]byte, 0, 32)
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			h = append(h, s[i])
		}
	}
	if len(h) != 32 {
		return id, fmt.Errorf("parse boot id %q: not a UUID", s)
	}
	if _, err := hex.Decode(id[:], h); err != nil {
		return id, fmt.Errorf("parse boot id %q: %w", s, err)
	}
	return id, nil
}

// NewID returns the id of ev on the boot boot. ev.Time must be set: it is
// part of what the id is derived from.
func NewID(boot BootID, ev *Event) ID {
	var in [16 + 1 + 8 + 8 + 8 + 8 + 1 + 64]byte
	b := append(in[:0], boot[:]...)
	b = append(b, byte(ev.Kind))
	b = binary.BigEndian.AppendUint64(b, uint64(ev.Time.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, ev.Netns)
	if ev.Kind == Gap {
		b = binary.BigEndian.AppendUint64(b, ev.Count)
		b = append(b, byte(len(ev.Reason)))
		b = append(b, ev.Reason...)
	} else {
		b = binary.BigEndian.AppendUint64(b, ev.Socket.Cookie)
	}
	sum := sha256.Sum256(b)
	var id ID
	copy(id[:], sum[:])
	return id
}
