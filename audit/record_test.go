package audit

import (
	"bufio"
	"bytes"
	"errors"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"
)

// replay feeds a testdata file of records ("TYPE TEXT" lines, # comments)
// to an Assembler and returns the Calls it finishes.
func replay(t *testing.T, path string) ([]Call, *Assembler) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var a Assembler
	var out []Call
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		sp := bytes.IndexByte(line, ' ')
		typ, err := strconv.ParseUint(string(line[:sp]), 10, 16)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		if c := a.Add(uint16(typ), line[sp+1:]); c != nil {
			out = append(out, *c)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, &a
}

func TestCapturedRecords(t *testing.T) {
	calls, a := replay(t, "testdata/records.txt")
	if a.Malformed != 0 {
		t.Fatalf("%d malformed, last: %v", a.Malformed, a.LastErr)
	}
	if len(calls) != 4 {
		t.Fatalf("%d calls, want 4: %+v", len(calls), calls)
	}
	want := []struct {
		op      Op
		peer    string
		success bool
		exit    int64
		fd      int32
		pid     int32
		comm    string
		exe     string
	}{
		// Go's non-blocking connect: EINPROGRESS, a connection all the same.
		{OpConnect, "127.0.0.1:46059", false, -115, 11, 2234, "audit.test", "/tmp/go-build653057046/b001/audit.test"},
		{OpAccept, "127.0.0.1:45958", true, 12, 12, 2234, "audit.test", "/tmp/go-build653057046/b001/audit.test"},
		{OpConnect, "[::1]:35573", true, 0, 3, 2246, "bash", "/usr/bin/bash"},
		{OpConnect, "127.0.0.1:1", false, -111, 3, 2246, "bash", "/usr/bin/bash"},
	}
	for i, w := range want {
		c := calls[i]
		if c.Op != w.op || c.Peer != netip.MustParseAddrPort(w.peer) || c.Success != w.success || c.Exit != w.exit ||
			c.FD != w.fd || c.PID != w.pid || c.Comm != w.comm || c.Exe != w.exe || c.Key != Key || c.Arch != archX86_64 {
			t.Errorf("call %d = %+v, want %+v", i, c, w)
		}
	}
	if got := string(calls[2].Proctitle); got != "bash\x00-c\x00exec 3<>/dev/tcp/::1/35573; exec 3>&-; { : 4<>/dev/tcp/127.0.0.1/1; } 2>/dev/null; true" {
		t.Errorf("proctitle %q", got)
	}
	if got, want := calls[0].Time, time.Unix(1796595971, 739e6); !got.Equal(want) || calls[0].Serial != 290 {
		t.Errorf("header %v:%d, want %v:290", got, calls[0].Serial, want)
	}
}

func TestCraftedRecords(t *testing.T) {
	calls, a := replay(t, "testdata/crafted.txt")
	// Three malformed: the header, the pid, the saddr.
	if a.Malformed != 3 || !errors.Is(a.LastErr, ErrMalformed) {
		t.Errorf("malformed %d (last %v), want 3", a.Malformed, a.LastErr)
	}
	byPID := map[int32]Call{}
	for _, c := range calls {
		byPID[c.PID] = c
	}
	c := byPID[4000]
	if c.Comm != "my comm" || c.Exe != "/tmp/a b/c" || c.Key != "" || c.UID != 1000 || c.EUID != 1001 || c.FSUID != 1002 || c.AUID != 1000 ||
		c.Peer != netip.MustParseAddrPort("[fe80::1]:443") || string(c.Proctitle) != "curl" {
		t.Errorf("hex-encoded strings, interleaved: %+v", c)
	}
	if _, ok := byPID[4001]; ok {
		t.Error("read(2) taken for a socket call")
	}
	c = byPID[4002]
	if c.Op != OpConnect || c.FD != 7 || c.Peer != netip.MustParseAddrPort("10.0.0.1:8080") || c.Arch != archI386 {
		t.Errorf("socketcall connect: %+v", c)
	}
	if c := byPID[4003]; c.Peer.IsValid() || c.Op != OpConnect {
		t.Errorf("unix connect: %+v", c)
	}
	if c := byPID[4004]; c.Op != OpAccept || c.FD != -1 || c.Success {
		t.Errorf("failed accept: %+v", c)
	}
	if c := byPID[4005]; c.Peer.IsValid() {
		t.Errorf("bad saddr gave a peer: %+v", c)
	}
}

func TestAssemblerBounded(t *testing.T) {
	var a Assembler
	for i := range 3 * maxPending {
		line := "audit(1796595980.100:" + strconv.Itoa(1000+i) + "): arch=c000003e syscall=42 success=yes exit=0 a0=3 pid=7"
		if c := a.Add(TypeSyscall, []byte(line)); c != nil {
			t.Fatal("a call without EOE")
		}
	}
	if a.Pending() != maxPending || a.Evicted != 2*maxPending {
		t.Errorf("pending %d evicted %d", a.Pending(), a.Evicted)
	}
}

func TestRuleEncoding(t *testing.T) {
	for _, r := range ownRules() {
		b := r.encode()
		k, err := ruleKey(b)
		if err != nil || k != Key {
			t.Errorf("%s: key %q, %v", r, k, err)
		}
	}
	if _, err := ruleKey(make([]byte, 10)); err == nil {
		t.Error("short rule accepted")
	}
}

func FuzzAssembler(f *testing.F) {
	for _, path := range []string{"testdata/records.txt", "testdata/crafted.txt"} {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if sp := bytes.IndexByte(line, ' '); sp > 0 && line[0] != '#' {
				typ, _ := strconv.ParseUint(string(line[:sp]), 10, 16)
				f.Add(uint16(typ), line[sp+1:])
			}
		}
	}
	f.Fuzz(func(t *testing.T, typ uint16, text []byte) {
		var a Assembler
		a.Add(TypeSyscall, []byte("audit(1.001:1): arch=c000003e syscall=42 success=yes exit=0 a0=3 pid=7"))
		a.Add(typ, text)
		c := a.Add(TypeEOE, []byte("audit(1.001:1): "))
		if c != nil && c.Op == OpNone {
			t.Fatal("a call of no socket op")
		}
		ruleKey(text)
		parseStatus(text)
	})
}
