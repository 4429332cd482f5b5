// Package statefile reads and writes the socket table connlogd keeps
// across a restart, so that sockets alive on both sides of it are not
// announced again and those that closed meanwhile are reported closed.
//
// The file is written by root and read by root, but it sits in a
// directory, and what is read from it becomes events, so it is not
// trusted:
//
//   - it is never opened through a symbolic link, nor when it has several
//     hard links (package safefile), and only a regular file is read;
//   - it is at most MaxSize bytes (128 MiB: at least 250,000 sockets,
//     at the size of the largest records), checked before reading, so a
//     restore holds at most that much besides the records it keeps;
//   - every record is checked: protocol TCP or UDP, family IPv4 or IPv6,
//     a state a dump can report (1-11, UDP only 1 or 7), a non-zero
//     cookie, addresses of the record's family, a first-seen time not
//     after the save. A bad record is skipped and counted, never turned
//     into an event; records that repeat a cookie are collapsed into the
//     first.
//
// A structural problem (not JSON, another version) refuses the whole
// file. The package never logs: Read's Report says what was skipped, for
// the caller's one warning.
package statefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/safefile"
	"github.com/connlogd/connlogd/snapshot"
)

// Version changes whenever the saved layout does.
const Version = 1

// MaxSize bounds the file. A record takes 300 to 530 bytes as JSON (an
// IPv6 socket with every tcp_info field at its widest); a table too large
// for it is not saved, and the next start reports its sockets as initial.
const MaxSize = 128 << 20

// State is the socket table kept across a restart. Cookies are unique
// only within one boot, so a state from another boot is useless: the
// caller compares BootID with the running boot's.
type State struct {
	Version    int       `json:"version"`
	BootID     string    `json:"boot_id"`
	SavedAt    time.Time `json:"saved_at"`
	Namespaces []NS      `json:"namespaces"`
}

// NS is one network namespace's table, by the namespace's device and
// inode numbers.
type NS struct {
	Dev     uint64           `json:"dev"`
	Ino     uint64           `json:"ino"`
	Sockets []differ.Tracked `json:"sockets"`
}

// Report says what Decode left out.
type Report struct {
	Skipped    int    // records refused
	Duplicates int    // records that repeated an earlier record's cookie
	Example    string // why the first refused record was refused
}

// Sockets counts the records kept.
func (st *State) Sockets() int {
	n := 0
	for _, ns := range st.Namespaces {
		n += len(ns.Sockets)
	}
	return n
}

// BootID returns the running boot's identifier, or "" when it cannot be
// read.
func BootID() string {
	b, err := safefile.ReadFile("/proc/sys/kernel/random/boot_id", 64)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// Write saves st at path atomically: a new file in the same directory,
// synced, renamed over the old one. The rename replaces a link at path
// rather than following it, and the directory must pass safefile's
// rule, so no other file can be written.
func Write(path string, st *State) error {
	dir := filepath.Dir(path)
	if err := safefile.CheckDir(dir); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("state %s: encode: %w", path, err)
	}
	if len(b) > MaxSize {
		return fmt.Errorf("state %s: %w: %d bytes, more than the limit of %d that a read accepts", path, safefile.ErrTooLarge, len(b), MaxSize)
	}
	tmp, err := os.CreateTemp(dir, ".connlogd-state-*") // O_EXCL, mode 0600
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("state %s: write: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("state %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return nil
}

// Read reads and decodes the file at path (see the package comment for
// what is refused). A missing file gives an error matching
// fs.ErrNotExist.
func Read(path string, now time.Time) (*State, Report, error) {
	b, err := safefile.ReadNoFollow(path, MaxSize)
	if err != nil {
		return nil, Report{}, fmt.Errorf("state: %w", err)
	}
	st, rep, err := Decode(b, now)
	if err != nil {
		return nil, rep, fmt.Errorf("state %s: %w", path, err)
	}
	return st, rep, nil
}

// Decode parses a saved state, record by record, and checks each record;
// now bounds the save time (a save in the future is refused).
func Decode(data []byte, now time.Time) (*State, Report, error) {
	var rep Report
	if len(data) > MaxSize {
		return nil, rep, fmt.Errorf("%w: %d bytes, more than the limit of %d", safefile.ErrTooLarge, len(data), MaxSize)
	}
	d := decoder{dec: json.NewDecoder(bytes.NewReader(data)), seen: map[uint64]bool{}, rep: &rep}
	var st State
	var raw []NS
	var seenKeys [4]bool
	keys := map[string]int{"version": 0, "boot_id": 1, "saved_at": 2, "namespaces": 3}
	err := d.object(func(key string) error {
		if i, ok := keys[key]; ok {
			if seenKeys[i] {
				return errors.New("given twice")
			}
			seenKeys[i] = true
		}
		switch key {
		case "version":
			return d.dec.Decode(&st.Version)
		case "boot_id":
			return d.dec.Decode(&st.BootID)
		case "saved_at":
			return d.dec.Decode(&st.SavedAt)
		case "namespaces":
			var err error
			raw, err = d.namespaces()
			return err
		}
		return fmt.Errorf("unknown key %q", key)
	})
	if err != nil {
		return nil, rep, err
	}
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, rep, errors.New("data after the state object")
	}
	switch {
	case seenKeys != [4]bool{true, true, true, true}:
		return nil, rep, errors.New("missing version, boot_id, saved_at or namespaces")
	case st.Version != Version:
		return nil, rep, fmt.Errorf("format version %d, want %d", st.Version, Version)
	case st.SavedAt.After(now.Add(time.Minute)):
		return nil, rep, fmt.Errorf("saved at %s, in the future", st.SavedAt.Format(time.RFC3339))
	}
	// Records are checked against the save time now that it is known.
	for _, ns := range raw {
		kept := ns.Sockets[:0]
		for i := range ns.Sockets {
			t := &ns.Sockets[i]
			if t.FirstSeen.After(st.SavedAt) {
				d.bad(fmt.Sprintf("cookie %d: first seen %s, after the save", t.Socket.Cookie, t.FirstSeen.Format(time.RFC3339Nano)))
				continue
			}
			kept = append(kept, *t)
		}
		ns.Sockets = kept
		st.Namespaces = append(st.Namespaces, ns)
	}
	return &st, rep, nil
}

type decoder struct {
	dec  *json.Decoder
	seen map[uint64]bool // cookies kept so far: unique per boot, across namespaces
	rep  *Report
}

func (d *decoder) bad(why string) {
	if d.rep.Skipped == 0 {
		d.rep.Example = why
	}
	d.rep.Skipped++
}

func (d *decoder) delim(want json.Delim) error {
	tok, err := d.dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("want %v, found %v", want, tok)
	}
	return nil
}

// object reads an object, calling fn to read the value of each key.
func (d *decoder) object(fn func(key string) error) error {
	if err := d.delim('{'); err != nil {
		return err
	}
	for d.dec.More() {
		tok, err := d.dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("want a key, found %v", tok)
		}
		if err := fn(key); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return d.delim('}')
}

// array reads the '[' of a list and reports whether there is one: a
// JSON null stands for an empty list (encoding/json writes a nil slice so).
func (d *decoder) array() (bool, error) {
	tok, err := d.dec.Token()
	switch {
	case err != nil:
		return false, err
	case tok == nil:
		return false, nil
	case tok != json.Delim('['):
		return false, fmt.Errorf("want a list, found %v", tok)
	}
	return true, nil
}

func (d *decoder) namespaces() ([]NS, error) {
	if ok, err := d.array(); !ok {
		return nil, err
	}
	var out []NS
	for d.dec.More() {
		var ns NS
		err := d.object(func(key string) error {
			switch key {
			case "dev":
				return d.dec.Decode(&ns.Dev)
			case "ino":
				return d.dec.Decode(&ns.Ino)
			case "sockets":
				return d.sockets(&ns)
			}
			return fmt.Errorf("unknown key %q", key)
		})
		if err != nil {
			return nil, err
		}
		out = append(out, ns)
	}
	return out, d.delim(']')
}

// sockets reads one record at a time, so a huge list costs only what is
// kept.
func (d *decoder) sockets(ns *NS) error {
	if ok, err := d.array(); !ok {
		return err
	}
	for d.dec.More() {
		var t differ.Tracked
		if err := d.dec.Decode(&t); err != nil {
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) {
				return err // not JSON: the rest cannot be read
			}
			// A value of the wrong type: the decoder has read past it.
			d.bad(fmt.Sprintf("record of the wrong shape: %v", err))
			continue
		}
		if why := CheckRecord(&t.Socket); why != "" {
			d.bad(why)
			continue
		}
		if d.seen[t.Socket.Cookie] {
			d.rep.Duplicates++
			continue
		}
		d.seen[t.Socket.Cookie] = true
		ns.Sockets = append(ns.Sockets, t)
	}
	return d.delim(']')
}

// CheckRecord says why a restored socket cannot be one the kernel
// reported, or "" when it can.
func CheckRecord(s *snapshot.Socket) string {
	switch {
	case s.Proto != snapshot.ProtoTCP && s.Proto != snapshot.ProtoUDP:
		return fmt.Sprintf("cookie %d: protocol %d is not tcp or udp", s.Cookie, s.Proto)
	case s.Family != snapshot.FamilyIPv4 && s.Family != snapshot.FamilyIPv6:
		return fmt.Sprintf("cookie %d: family %d is not ipv4 or ipv6", s.Cookie, s.Family)
	case s.State < snapshot.StateEstablished || s.State > snapshot.StateClosing:
		return fmt.Sprintf("cookie %d: state %d is not one a dump reports", s.Cookie, s.State)
	case s.Proto == snapshot.ProtoUDP && s.State != snapshot.StateEstablished && s.State != snapshot.StateClose:
		return fmt.Sprintf("cookie %d: state %s is not a UDP state", s.Cookie, s.State)
	case s.Cookie == 0:
		return "cookie 0: the kernel's cookies start at 1"
	case !s.Src.IsValid() || !s.Dst.IsValid():
		return fmt.Sprintf("cookie %d: missing address", s.Cookie)
	}
	v4 := s.Family == snapshot.FamilyIPv4
	if s.Src.Addr().Is4() != v4 || s.Dst.Addr().Is4() != v4 || s.Src.Addr().Zone() != "" || s.Dst.Addr().Zone() != "" {
		return fmt.Sprintf("cookie %d: addresses %s and %s are not %s addresses", s.Cookie, s.Src, s.Dst, s.Family)
	}
	return ""
}
