package statefile

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/safefile"
	"github.com/connlogd/connlogd/snapshot"
)

var saved = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func tcp(cookie uint64, port uint16) differ.Tracked {
	return differ.Tracked{
		Socket: snapshot.Socket{
			Key: snapshot.Key{Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: cookie,
				Src: netip.MustParseAddrPort("10.0.0.1:443"), Dst: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port)},
			State: snapshot.StateEstablished, UID: 33, Inode: 1000 + uint32(cookie),
			HasInfo: true, Info: snapshot.TCPInfo{Len: 232, RTT: 120, BytesAcked: 4096, BytesSent: 4096},
		},
		FirstSeen: saved.Add(-time.Minute),
	}
}

func sample() *State {
	return &State{Version: Version, BootID: "b0", SavedAt: saved, Namespaces: []NS{
		{Dev: 4, Ino: 4026531840, Sockets: []differ.Tracked{tcp(1, 50000), tcp(2, 50001)}},
	}}
}

func TestWriteRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Write(path, sample()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	st, rep, err := Read(path, saved.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if rep != (Report{}) || st.Sockets() != 2 || st.BootID != "b0" || !st.SavedAt.Equal(saved) {
		t.Errorf("Read = %+v, %+v", st, rep)
	}
	if got, want := st.Namespaces[0].Sockets[1], tcp(2, 50001); got.Socket != want.Socket || !got.FirstSeen.Equal(want.FirstSeen) {
		t.Errorf("record = %+v, want %+v", got, want)
	}
}

// hostile edits a saved state's first namespace's records as JSON, the
// way a user with write access to the file could.
func hostile(t *testing.T, edit func(recs []map[string]any) []map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	ns := doc["namespaces"].([]any)[0].(map[string]any)
	var recs []map[string]any
	for _, r := range ns["sockets"].([]any) {
		recs = append(recs, r.(map[string]any))
	}
	recs = edit(recs)
	ns["sockets"] = recs
	b, err = json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func socketOf(r map[string]any) map[string]any { return r["Socket"].(map[string]any) }

func clone(r map[string]any) map[string]any {
	b, _ := json.Marshal(r)
	var c map[string]any
	json.Unmarshal(b, &c)
	return c
}

// Records no kernel reports are skipped and counted, never kept (so
// never turned into events with "proto99" and the like); a repeated
// cookie is one socket.
func TestHostileRecords(t *testing.T) {
	for _, tt := range []struct {
		name    string
		set     func(s map[string]any)
		example string
	}{
		{"protocol 99", func(s map[string]any) { s["Proto"] = 99 }, "protocol 99 is not tcp or udp"},
		{"family 77", func(s map[string]any) { s["Family"] = 77 }, "family 77 is not ipv4 or ipv6"},
		{"state 255", func(s map[string]any) { s["State"] = 255 }, "state 255 is not one a dump reports"},
		{"state 0", func(s map[string]any) { s["State"] = 0 }, "state 0"},
		{"internal state 12", func(s map[string]any) { s["State"] = 12 }, "state 12"},
		{"udp listen", func(s map[string]any) { s["Proto"], s["State"] = 17, 10 }, "state listen is not a UDP state"},
		{"cookie 0", func(s map[string]any) { s["Cookie"] = 0 }, "cookie 0"},
		{"ipv6 address on ipv4", func(s map[string]any) { s["Src"] = "[::1]:443" }, "are not ipv4 addresses"},
		{"no address", func(s map[string]any) { s["Dst"] = "" }, "missing address"},
		{"wrong type", func(s map[string]any) { s["Proto"] = "tcp" }, "wrong shape"},
		{"out of range number", func(s map[string]any) { s["Proto"] = 1000 }, "wrong shape"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := hostile(t, func(recs []map[string]any) []map[string]any {
				tt.set(socketOf(recs[0]))
				return recs
			})
			st, rep, err := Decode(data, saved)
			if err != nil {
				t.Fatal(err)
			}
			if st.Sockets() != 1 || st.Namespaces[0].Sockets[0].Socket.Cookie != 2 {
				t.Errorf("kept %+v, want only cookie 2", st.Namespaces)
			}
			if rep.Skipped != 1 || !strings.Contains(rep.Example, tt.example) {
				t.Errorf("report %+v, want 1 skipped: …%s…", rep, tt.example)
			}
		})
	}
	t.Run("first seen after the save", func(t *testing.T) {
		data := hostile(t, func(recs []map[string]any) []map[string]any {
			recs[1]["FirstSeen"] = saved.Add(time.Hour)
			return recs
		})
		st, rep, err := Decode(data, saved)
		if err != nil || st.Sockets() != 1 || rep.Skipped != 1 || !strings.Contains(rep.Example, "after the save") {
			t.Errorf("Decode = %+v, %+v, %v", st, rep, err)
		}
	})
	t.Run("three records with one cookie", func(t *testing.T) {
		data := hostile(t, func(recs []map[string]any) []map[string]any {
			a, b := clone(recs[0]), clone(recs[0])
			socketOf(b)["Dst"] = "10.9.9.9:1"
			return append(recs, a, b)
		})
		st, rep, err := Decode(data, saved)
		if err != nil || st.Sockets() != 2 || rep.Duplicates != 2 || rep.Skipped != 0 {
			t.Errorf("Decode = %d sockets, %+v, %v; want 2 sockets, 2 duplicates", st.Sockets(), rep, err)
		}
	})
}

func TestBadFiles(t *testing.T) {
	good, _ := json.Marshal(sample())
	for _, tt := range []struct{ name, data, want string }{
		{"not JSON", "{", "EOF"},
		{"array", "[]", "want {"},
		{"other version", strings.Replace(string(good), `"version":1`, `"version":2`, 1), "format version 2, want 1"},
		{"missing keys", `{"version":1}`, "missing"},
		{"unknown key", strings.Replace(string(good), `"version":1`, `"version":1,"x":1`, 1), `unknown key "x"`},
		{"key twice", strings.Replace(string(good), `"version":1`, `"version":1,"version":1`, 1), "version: given twice"},
		{"trailing data", string(good) + "{}", "data after the state object"},
		{"saved in the future", strings.Replace(string(good), "2026-12-06T12", "2027-12-06T12", 1), "in the future"},
		{"syntax error in a record", strings.Replace(string(good), `"Proto":6`, `"Proto":6x`, 1), "invalid character"},
	} {
		if _, _, err := Decode([]byte(tt.data), saved); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Decode = %v, want …%s…", tt.name, err, tt.want)
		}
	}
}

// An oversized file is refused from its size, before anything is read.
func TestOversizedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxSize + 1); err != nil { // sparse: costs nothing
		t.Fatal(err)
	}
	f.Close()
	_, _, err = Read(path, saved)
	if !errors.Is(err, safefile.ErrTooLarge) || !strings.Contains(err.Error(), path) {
		t.Errorf("Read = %v, want ErrTooLarge naming the file", err)
	}
	if _, _, err := Decode(make([]byte, MaxSize+1), saved); !errors.Is(err, safefile.ErrTooLarge) {
		t.Errorf("Decode = %v, want ErrTooLarge", err)
	}
}

func TestReadRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.json")
	if err := Write(real, sample()); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "state.json")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(link, saved); err == nil || !strings.Contains(err.Error(), link+": refused: is a symbolic link") {
		t.Errorf("Read through a symlink = %v", err)
	}
	hard := filepath.Join(dir, "hard.json")
	if err := os.Link(real, hard); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(hard, saved); err == nil || !strings.Contains(err.Error(), "2 hard links") {
		t.Errorf("Read of a hard-linked file = %v", err)
	}
	if _, _, err := Read(filepath.Join(dir, "none.json"), saved); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a missing file = %v, want ErrNotExist", err)
	}
	if _, _, err := Read("/dev/zero", saved); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Read(/dev/zero) = %v", err)
	}
}

// Writing replaces a link planted at the path instead of writing through
// it, and refuses a directory others can write.
func TestWriteDoesNotFollow(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.json")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, sample()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("written through the link: %q", b)
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(open, "state.json"), sample()); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("Write in a world-writable directory = %v", err)
	}
}

// bigTable is a saved table of n IPv6 sockets with every tcp_info field
// at its widest: the largest records a host writes.
func bigTable(tb testing.TB, n int) []byte {
	st := sample()
	st.Namespaces[0].Sockets = nil
	for i := range n {
		tr := tcp(uint64(i+1), uint16(i))
		tr.Socket.Info = snapshot.TCPInfo{Len: 232, Retransmits: 1, RTT: 123456, RTTVar: 65432, TotalRetrans: 12,
			BytesAcked: 123456789012, BytesReceived: 123456789012, SegsOut: 1234567, SegsIn: 1234567, BytesSent: 123456789012, BytesRetrans: 12345678}
		tr.Socket.Src = netip.MustParseAddrPort("[2001:db8:1234:5678:9abc:def0:1234:5678]:443")
		tr.Socket.Dst = netip.MustParseAddrPort("[2001:db8:1234:5678:9abc:def0:1234:5679]:54321")
		tr.Socket.Family = snapshot.FamilyIPv6
		st.Namespaces[0].Sockets = append(st.Namespaces[0].Sockets, tr)
	}
	data, err := json.Marshal(st)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// A table of 200,000 of the largest records fits in MaxSize.
func TestMaxSizeHoldsLargeTables(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a large table")
	}
	const n = 200_000
	data := bigTable(t, n)
	t.Logf("%d bytes a record", len(data)/n)
	if len(data) > MaxSize {
		t.Errorf("%d sockets take %d bytes, more than MaxSize %d", n, len(data), MaxSize)
	}
}

// BenchmarkDecode restores 100,000 sockets; BenchmarkDecodeBaseline is
// the whole-file json.Unmarshal that Decode replaced, on the same data,
// for the ratio.
func BenchmarkDecode(b *testing.B) {
	data := bigTable(b, 100_000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := Decode(data, saved); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBaseline(b *testing.B) {
	data := bigTable(b, 100_000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var st State
		if err := json.Unmarshal(data, &st); err != nil {
			b.Fatal(err)
		}
	}
}
