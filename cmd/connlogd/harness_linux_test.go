//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
)

// connlogdBin is the connlogd built once for the integration tests, which run
// it as a user would: a separate process in its own namespace.
var connlogdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "connlogd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	connlogdBin = filepath.Join(dir, "connlogd")
	build := exec.Command("go", "build", "-race", "-o", connlogdBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ev is one decoded output line.
type ev map[string]any

func (e ev) str(k string) string {
	v, _ := e[k].(string)
	return v
}

func (e ev) num(k string) float64 {
	switch v := e[k].(type) {
	case json.Number:
		f, _ := v.Float64()
		return f
	case float64:
		return v
	}
	return -1
}

func (e ev) has(k string) bool { _, ok := e[k]; return ok }

// proc is a connlogd process under test.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    string // the file sink's path
	stderr *bytes.Buffer
	mu     sync.Mutex
	done   chan struct{}
	err    error
}

// startDaemon runs connlogd in ns with a file sink and the given extra
// configuration lines, and stops it at cleanup.
func startDaemon(t *testing.T, ns *netnstest.NS, extra string) *proc {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "events.json")
	cfg := filepath.Join(dir, "config.yaml")
	body := extra + "\nsinks:\n  - type: file\n    path: " + out + "\n"
	if !strings.Contains(extra, "interval:") {
		body = "interval: 200ms\n" + body
	}
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &proc{t: t, out: out, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	d.cmd = ns.Command(connlogdBin, "-config", cfg)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop() })
	return d
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (d *proc) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// stop sends SIGTERM and checks the daemon exits 0 in time.
func (d *proc) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	// The daemon bounds its shutdown drains (5s); the rest is margin for a
	// busy machine and a race-instrumented binary.
	select {
	case <-d.done:
		if d.err != nil {
			d.t.Errorf("connlogd exited with %v; stderr:\n%s", d.err, d.logs())
		}
	case <-time.After(60 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		d.t.Errorf("connlogd did not exit within 60s of SIGTERM; stderr:\n%s", d.logs())
	}
}

// events reads every complete line the file sink holds.
func (d *proc) events() []ev {
	d.t.Helper()
	f, err := os.Open(d.out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	var evs []ev
	data, err := io.ReadAll(f)
	if err != nil {
		d.t.Fatal(err)
	}
	// A line still being written has no newline yet: a tailer waits for it.
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		data = nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		var e ev
		if err := dec.Decode(&e); err != nil {
			d.t.Fatalf("line is not JSON: %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitFor polls the output until cond holds, failing after timeout.
func (d *proc) waitFor(what string, timeout time.Duration, cond func([]ev) bool) []ev {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := d.events()
		if cond(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out waiting for %s; %d events:\n%s\nstderr:\n%s", what, len(evs), dump(evs), d.logs())
		}
		select {
		case <-d.done:
			d.t.Fatalf("connlogd exited (%v) while waiting for %s; stderr:\n%s", d.err, what, d.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dump prints events for a failure message: the last 500 at most, since a
// daemon watching every namespace may hold tens of thousands of other
// tests' events.
func dump(evs []ev) string {
	var b strings.Builder
	if len(evs) > 500 {
		fmt.Fprintf(&b, "(%d earlier events left out)\n", len(evs)-500)
		evs = evs[len(evs)-500:]
	}
	for _, e := range evs {
		j, _ := json.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// match returns the events of the given kind on the given local port.
// started splits off the not_running gaps, one of which each start of a
// daemon writes first: what remains is what the run saw.
func started(evs []ev) (rest []ev, starts int) {
	for _, e := range evs {
		if e.str("event") == "gap" && e.str("reason") == "not_running" {
			starts++
			continue
		}
		rest = append(rest, e)
	}
	return rest, starts
}

func match(evs []ev, kind string, proto string, srcPort int) []ev {
	var out []ev
	for _, e := range evs {
		if e.str("event") == kind && e.str("proto") == proto && int(e.num("src_port")) == srcPort {
			out = append(out, e)
		}
	}
	return out
}

func countOf(evs []ev, kind, proto string, port int) func([]ev) bool {
	return func(all []ev) bool { return len(match(all, kind, proto, port)) > 0 }
}

func num(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return f
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func newBuf() *bytes.Buffer { return &bytes.Buffer{} }
