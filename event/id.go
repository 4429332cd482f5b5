package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"time"
)

// ID identifies one event: unique among the events of one host, and the
// same every time that event is written, to every sink and schema, and
// when a sink delivers it again (a RELP or TCP resend), so that a
// pipeline can drop the copies.
//
// An IDs source assigns them: 64 bits that name the run writing the
// events (the first half of the SHA-256 of the boot, the writer's process
// id and its start time), then the event's sequence number in the run.
// A bare counter would restart with the daemon, or need the state file,
// which a crash does not write, and give a new event the id of an old
// one, which a deduplicating pipeline would then drop; the run makes
// each restart a new scope, and two runs share a prefix with the odds
// of a 64-bit collision. Deriving the id from the event's content alone
// is not enough: two gaps of one reason in one instant are alike, and are
// still two events. The ids of one run sort in the order of its events.
type ID [16]byte

// IsZero reports whether id was never set.
func (id ID) IsZero() bool { return id == ID{} }

// Append appends id as 32 lowercase hex digits.
func (id ID) Append(b []byte) []byte { return hex.AppendEncode(b, id[:]) }

// AppendText is Append as encoding.TextAppender.
func (id ID) AppendText(b []byte) ([]byte, error) { return id.Append(b), nil }

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

// IDs assigns event ids for one writer. It is not safe for concurrent
// use.
type IDs struct {
	run [8]byte
	seq uint64
}

// NewIDs returns the source of the ids of one run: the writer with
// process id pid that started at start, on the boot boot.
func NewIDs(boot BootID, pid int, start time.Time) *IDs {
	var in [16 + 8 + 8]byte
	copy(in[:16], boot[:])
	binary.BigEndian.PutUint64(in[16:], uint64(pid))
	binary.BigEndian.PutUint64(in[24:], uint64(start.UnixNano()))
	sum := sha256.Sum256(in[:])
	g := &IDs{}
	copy(g.run[:], sum[:8])
	return g
}

// Next returns the id of the run's next event.
func (g *IDs) Next() ID {
	g.seq++
	var id ID
	copy(id[:8], g.run[:])
	binary.BigEndian.PutUint64(id[8:], g.seq)
	return id
}
