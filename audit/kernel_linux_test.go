//go:build linux

package audit

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/internal/audittest"
	"github.com/connlogd/connlogd/internal/netnstest"
)

var captureFile = flag.String("capture", "", "write the records of known calls to this file (refreshes testdata/records.txt)")

// requireAudit skips (or fails under CONNLOGD_REQUIRE_NETNS=1, as CI
// runs) when the test cannot manage the kernel's audit rules.
func requireAudit(t *testing.T) {
	t.Helper()
	audittest.Lock(t)
	c, err := openControl()
	if err == nil {
		_, err = c.status()
		c.close()
	}
	if err != nil {
		netnstest.Missing(t, fmt.Sprintf("needs root and a kernel with audit: audit control: %v", err))
	}
}

// kernelState is what the tests must leave as they found it.
type kernelState struct {
	enabled uint32
	rules   []string // hex of each rule, in order
	keyed   int      // rules with connlogd's key
}

func snapshotState(t *testing.T) kernelState {
	t.Helper()
	c, err := openControl()
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := c.rules()
	if err != nil {
		t.Fatal(err)
	}
	ks := kernelState{enabled: st.Enabled}
	for _, r := range rules {
		ks.rules = append(ks.rules, fmt.Sprintf("%x", r))
		if k, err := ruleKey(r); err == nil && k == Key {
			ks.keyed++
		}
	}
	return ks
}

// same says whether the flag and the rules are as in o.
func (k kernelState) same(o kernelState) bool {
	return k.enabled == o.enabled && slices.Equal(k.rules, o.rules)
}

func (k kernelState) String() string {
	return fmt.Sprintf("enabled %d, %d rules", k.enabled, len(k.rules))
}

// keepState fails the test if the kernel's audit state differs at the
// end, and puts it back so that the next test starts clean.
func keepState(t *testing.T) kernelState {
	t.Helper()
	return audittest.KeepState(t, func() kernelState { return snapshotState(t) },
		kernelState.same,
		func(before kernelState) {
			c, err := openControl()
			if err != nil {
				return
			}
			defer c.close()
			r := &Rules{c: c}
			r.removeKeyed()
			c.setEnabled(before.enabled)
		})
}

func countKeyed(t *testing.T) int { return snapshotState(t).keyed }

func TestRulesInstallClose(t *testing.T) {
	requireAudit(t)
	before := keepState(t)
	state := filepath.Join(t.TempDir(), "audit-enabled")
	r, err := InstallRules(state)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := countKeyed(t), len(ownRules()); got != want {
		t.Errorf("%d rules with key %s installed, want %d", got, Key, want)
	}
	if p, err := r.Present(); err != nil || !p {
		t.Errorf("Present = %v, %v", p, err)
	}
	if st := snapshotState(t); st.enabled != 1 {
		t.Errorf("enabled = %d with rules installed", st.enabled)
	}
	// auditctl, when installed, sees them as a user would.
	if path, err := exec.LookPath("auditctl"); err == nil {
		out, err := exec.Command(path, "-l").CombinedOutput()
		if err != nil {
			t.Fatalf("auditctl -l: %v\n%s", err, out)
		}
		if n := strings.Count(string(out), "-k "+Key) + strings.Count(string(out), "key="+Key); n != len(ownRules()) {
			t.Errorf("auditctl -l lists %d rules with our key:\n%s", n, out)
		}
		t.Logf("auditctl -l:\n%s", out)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if after := snapshotState(t); !after.same(before) {
		t.Errorf("after Close: enabled %d (was %d), %d rules (were %d)", after.enabled, before.enabled, len(after.rules), len(before.rules))
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("flag file left: %v", err)
	}
}

// TestRulesAfterKill: a run killed with its rules in leaves them and the
// enabled flag on; the next run removes them and, at its end, restores
// the flag the killed run found.
func TestRulesAfterKill(t *testing.T) {
	requireAudit(t)
	before := keepState(t)
	state := filepath.Join(t.TempDir(), "audit-enabled")
	killed, err := InstallRules(state)
	if err != nil {
		t.Fatal(err)
	}
	killed.c.close() // as SIGKILL would: nothing removed
	r, err := InstallRules(state)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stale != len(ownRules()) {
		t.Errorf("Stale = %d, want %d", r.Stale, len(ownRules()))
	}
	if got := countKeyed(t); got != len(ownRules()) {
		t.Errorf("%d keyed rules after restart, want %d", got, len(ownRules()))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if after := snapshotState(t); !after.same(before) {
		t.Errorf("after restart and Close: enabled %d (was %d), %d rules (were %d)", after.enabled, before.enabled, len(after.rules), len(before.rules))
	}
}

// TestRulesKeepOthers: an administrator's rule, and the flag an
// administrator set, survive connlogd's rules coming and going.
func TestRulesKeepOthers(t *testing.T) {
	requireAudit(t)
	keepState(t)
	c, err := openControl()
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	// A rule like ours but with another key: not ours to touch.
	other := ownRules()[0].encode()
	otherKey := "admin000"
	copy(other[ruleFixedSize:], otherKey)
	if err := c.ruleOp(msgAddRule, other); err != nil {
		t.Fatal(err)
	}
	defer c.ruleOp(msgDelRule, other)
	r, err := InstallRules("")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rules, err := c.rules()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range rules {
		if k, _ := ruleKey(b); k == otherKey {
			found = true
		}
	}
	if !found {
		t.Error("the administrator's rule was removed")
	}
}

// captured is one record as read from the read-log group.
type captured struct {
	typ  uint16
	text string
}

// readUntil drains rd into an Assembler until done says so of a Call.
func readUntil(t *testing.T, rd *Reader, rec *[]captured, done func(*Call) bool) {
	t.Helper()
	var a Assembler
	deadline := time.Now().Add(20 * time.Second)
	found := false
	for !found && time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(rd.fd), Events: unix.POLLIN}}
		unix.Poll(pfd, 200)
		_, err := rd.Drain(1000, func(typ uint16, text []byte) {
			if rec != nil && typ >= TypeSyscall && typ < 1400 {
				*rec = append(*rec, captured{typ, string(bytes.TrimRight(text, "\x00\n"))})
			}
			if c := a.Add(typ, text); c != nil && done(c) {
				found = true
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatal("records of the call not read within 20s")
	}
}

// TestReaderRecords reads the records of connects and an accept of this
// process, and with -capture writes them to testdata for the parser's
// tests.
func TestReaderRecords(t *testing.T) {
	requireAudit(t)
	keepState(t)
	rd, err := OpenReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	r, err := InstallRules("")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	var rec []captured
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := netip.MustParseAddrPort(ln.Addr().String())
	conn, err := net.Dial("tcp4", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	cli := netip.MustParseAddrPort(conn.LocalAddr().String())
	acc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	acc.Close()
	conn.Close()
	pid := int32(os.Getpid())
	var sawConnect bool
	readUntil(t, rd, &rec, func(c *Call) bool {
		if c.PID != pid {
			return false
		}
		if c.Op == OpConnect && c.Peer == srv {
			sawConnect = true
		}
		return sawConnect && c.Op == OpAccept && c.Peer == cli && c.FD >= 0
	})

	// IPv6, refused, from a short-lived process of another executable.
	if _, err := exec.LookPath("bash"); err == nil {
		ln6, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		port6 := netip.MustParseAddrPort(ln6.Addr().String()).Port()
		cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/::1/%d; exec 3>&-; { : 4<>/dev/tcp/127.0.0.1/1; } 2>/dev/null; true", port6))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		ln6.Close()
		bpid := int32(cmd.Process.Pid)
		var saw6 bool
		readUntil(t, rd, &rec, func(c *Call) bool {
			if c.PID != bpid || c.Op != OpConnect {
				return false
			}
			if c.Peer.Port() == port6 && c.Peer.Addr() == netip.IPv6Loopback() && c.Success && c.Exe != "" {
				saw6 = true
			}
			return saw6 && c.Peer.Port() == 1 && !c.Success && c.Exit == -int64(unix.ECONNREFUSED)
		})
	}
	if *captureFile != "" {
		var b strings.Builder
		for _, r := range rec {
			fmt.Fprintf(&b, "%d %s\n", r.typ, r.text)
		}
		if err := os.WriteFile(*captureFile, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
