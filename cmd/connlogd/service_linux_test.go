//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/netnstest"
)

// startWith runs connlogd in ns on the given config file, with extra
// environment, and stops it at cleanup.
func startWith(t *testing.T, ns *netnstest.NS, cfgPath, out string, env ...string) *proc {
	t.Helper()
	d := &proc{t: t, out: out, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	d.cmd = ns.Command(connlogdBin, "-config", cfgPath)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop() })
	return d
}

// waitLog waits until the daemon's stderr holds n lines containing what.
func waitLog(t *testing.T, d *proc, what string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for strings.Count(d.logs(), what) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no %q (x%d) within %v; stderr:\n%s", what, n, timeout, d.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes path the way editors do: a new file renamed over it.
func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, body)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestReloadKeepsTableAndRefusesBadConfig(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	out1, out2, out3 := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json"), filepath.Join(dir, "c.json")
	sinkCfg := func(path string) string {
		return "interval: 200ms\nsinks:\n  - type: file\n    path: " + path + "\n"
	}
	writeFile(t, cfg, sinkCfg(out1))
	ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	d := startWith(t, ns, cfg, out1)
	d.waitFor("initial listener", 5*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", port)) > 0 })

	// Replace by rename: the new sink gets events within 3 s, and the
	// live listener is not announced again.
	replaceFile(t, cfg, sinkCfg(out2))
	d.out = out2
	waitLog(t, d, "configuration reloaded", 1, 3*time.Second)
	ln2 := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln2.Close()
	p2 := ln2.Addr().(*net.TCPAddr).Port
	evs := d.waitFor("new sink receives events", 3*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", p2)) > 0 })
	if n := len(match(evs, "appeared", "tcp", port)); n != 0 {
		t.Errorf("live listener announced again after reload (%d times)", n)
	}

	// A broken config is refused; the daemon keeps running on the last
	// good one.
	replaceFile(t, cfg, "interval: 200ms\nsinks:\n  - type: file\n    path: "+out3+"\n    colour: blue\n")
	time.Sleep(800 * time.Millisecond)
	if !strings.Contains(d.logs(), "configuration refused") {
		t.Errorf("bad config not reported; stderr:\n%s", d.logs())
	}
	ln3 := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln3.Close()
	p3 := ln3.Addr().(*net.TCPAddr).Port
	d.waitFor("old sink still used after a refused config", 3*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", p3)) > 0 })
	if _, err := os.Stat(out3); err == nil {
		t.Error("the refused config's sink was opened")
	}

	// SIGHUP applies a further change (written in place this time).
	writeFile(t, cfg, sinkCfg(out3))
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.out = out3
	waitLog(t, d, "configuration reloaded", 2, 3*time.Second)
	ln4 := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln4.Close()
	p4 := ln4.Addr().(*net.TCPAddr).Port
	evs = d.waitFor("sink after SIGHUP", 3*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", p4)) > 0 })
	for _, e := range evs {
		if e.str("event") == "appeared" && e["initial"] == true {
			t.Errorf("reload re-announced a socket: %v", e)
		}
	}
}

// notifyListener collects sd_notify datagrams.
type notifyListener struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	at   []time.Time
}

func listenNotify(t *testing.T) (*notifyListener, string) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyListener{conn: c}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.at = append(n.at, time.Now())
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n, path
}

// waitCount polls until at least want messages with prefix arrived since
// since, or until timeout; it reports whether they did.
func (n *notifyListener) waitCount(prefix string, since time.Time, want int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for n.count(prefix, since) < want {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// last is when the latest message with prefix arrived; zero if none did.
func (n *notifyListener) last(prefix string) time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.msgs) - 1; i >= 0; i-- {
		if strings.HasPrefix(n.msgs[i], prefix) {
			return n.at[i]
		}
	}
	return time.Time{}
}

func (n *notifyListener) count(prefix string, since time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for i, m := range n.msgs {
		if strings.HasPrefix(m, prefix) && !n.at[i].Before(since) {
			c++
		}
	}
	return c
}

// TestSystemdNotify: READY=1 after the first poll, WATCHDOG=1 while the
// loop runs and none while it is stuck (its file sink blocked on a full
// pipe), STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "events.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Hold the read end open, reading until told to stop.
	rd, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var paused atomic.Bool // set while the test blocks the pipe
	go func() {
		buf := make([]byte, 1<<16)
		for {
			if paused.Load() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if _, err := rd.Read(buf); err != nil && err != io.EOF {
				return
			}
		}
	}()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "interval: 100ms\nsinks:\n  - type: file\n    path: "+fifo+"\n")
	nl, sock := listenNotify(t)
	start := time.Now()
	d := startWith(t, ns, cfg, "", "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	deadline := time.Now().Add(30 * time.Second)
	for nl.count("READY=1", start) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if nl.count("READY=1", start) == 0 {
		t.Fatalf("no READY=1; got %q; stderr:\n%s", nl.msgs, d.logs())
	}
	// The machine may be busy: wait for the pings under generous deadlines
	// rather than counting them in a fixed window.
	if !nl.waitCount("WATCHDOG=1", start, 3, 30*time.Second) {
		t.Fatalf("%d WATCHDOG=1 within 30s with WatchdogSec=0.4s, want >= 3; stderr:\n%s", nl.count("WATCHDOG=1", start), d.logs())
	}
	// Block the loop: stop reading and flood the sink with events.
	paused.Store(true)
	blocked := time.Now()
	var hold []net.Listener
	err = ns.Do(func() error {
		for i := 0; i < 2000; i++ {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				return err
			}
			hold = append(hold, ln)
		}
		return nil
	})
	defer func() {
		for _, l := range hold {
			l.Close()
		}
	}()
	if err != nil {
		paused.Store(false)
		t.Fatal(err)
	}
	// Once the pipe is full the loop is stuck writing and the pings stop: a
	// daemon that kept pinging while stuck never shows a quiet window of ten
	// ping periods and fails here at the deadline.
	const quiet = 2 * time.Second // ten ping periods of 0.2s
	deadline = time.Now().Add(60 * time.Second)
	var stuck time.Time
	for {
		last := nl.last("WATCHDOG=1")
		if last.Before(blocked) {
			last = blocked
		}
		if time.Since(last) >= quiet {
			stuck = time.Now()
			break
		}
		if time.Now().After(deadline) {
			paused.Store(false)
			t.Fatalf("WATCHDOG=1 kept coming for 60s while the sink was blocked (last at %v); want none while the poll loop is stuck", time.Since(nl.last("WATCHDOG=1")))
		}
		time.Sleep(50 * time.Millisecond)
	}
	paused.Store(false)
	if !nl.waitCount("WATCHDOG=1", stuck, 1, 30*time.Second) {
		t.Errorf("no WATCHDOG=1 within 30s after the loop was unblocked")
	}
	d.stop()
	if nl.count("STOPPING=1", start) != 1 {
		t.Errorf("STOPPING=1 not sent once on SIGTERM; got %q", nl.msgs)
	}
}

// TestRestartContinuity: stop, close some sockets, open others, start:
// exactly the right closed and appeared events, nothing re-announced. On
// a quick poll, and on the default interval.
func TestRestartContinuity(t *testing.T) {
	for _, c := range []struct {
		name, interval string
		poll           time.Duration
	}{
		{"200ms", "interval: 200ms\n", 200 * time.Millisecond},
		{"default_interval", "", config.DefaultInterval},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testRestartContinuity(t, c.interval, c.poll)
		})
	}
}

func testRestartContinuity(t *testing.T, interval string, poll time.Duration) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	cfg := filepath.Join(dir, "config.yaml")
	out := filepath.Join(dir, "events.json")
	writeFile(t, cfg, interval+"state_file: "+state+"\nsinks:\n  - type: file\n    path: "+out+"\n")
	keep := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer keep.Close()
	gone := listenIn(t, ns, "tcp6", "[::1]:0")
	kp, gp := keep.Addr().(*net.TCPAddr).Port, gone.Addr().(*net.TCPAddr).Port
	d := startWith(t, ns, cfg, out)
	d.waitFor("both listeners", 30*time.Second, func(evs []ev) bool {
		return len(match(evs, "appeared", "tcp", kp)) > 0 && len(match(evs, "appeared", "tcp", gp)) > 0
	})
	d.stop()
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no state file after shutdown: %v; stderr:\n%s", err, d.logs())
	}
	before := len(d.events())

	gone.Close()
	fresh := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer fresh.Close()
	fp := fresh.Addr().(*net.TCPAddr).Port

	d2 := startWith(t, ns, cfg, out)
	d2.waitFor("late events", 30*time.Second, func(evs []ev) bool {
		return len(match(evs[before:], "closed", "tcp", gp)) > 0 && len(match(evs[before:], "appeared", "tcp", fp)) > 0
	})
	time.Sleep(3 * poll) // what else the next polls would wrongly add
	if !strings.Contains(d2.logs(), " interval="+poll.String()) {
		t.Errorf("the daemon does not poll every %v; stderr:\n%s", poll, d2.logs())
	}
	evs, starts := started(d2.events()[before:])
	if starts != 1 {
		t.Errorf("the restart wrote %d not_running gaps, want 1", starts)
	}
	if len(evs) != 2 {
		t.Errorf("after restart %d events besides its start, want exactly 2 (one late closed, one late appeared):\n%s", len(evs), dump(evs))
	}
	for _, e := range evs {
		if e["late"] != true {
			t.Errorf("not marked late: %v", e)
		}
	}
	if n := len(match(evs, "appeared", "tcp", kp)); n != 0 {
		t.Errorf("live listener re-announced %d times", n)
	}
	if c := match(evs, "closed", "tcp", gp); len(c) == 1 && c[0].num("duration") <= 0 {
		t.Errorf("late close without the duration known before the restart: %v", c[0])
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("state file kept after it was restored")
	}
}

// TestCorruptStateIsIgnored: a damaged state file is reported and the
// daemon starts afresh.
func TestCorruptStateIsIgnored(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	writeFile(t, state, "{not json")
	cfg := filepath.Join(dir, "config.yaml")
	out := filepath.Join(dir, "events.json")
	writeFile(t, cfg, "interval: 200ms\nstate_file: "+state+"\nsinks:\n  - type: file\n    path: "+out+"\n")
	ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	defer ln.Close()
	d := startWith(t, ns, cfg, out)
	d.waitFor("initial listener", 5*time.Second, func(evs []ev) bool { rest, _ := started(evs); return len(rest) > 0 })
	evs, _ := started(d.events())
	if evs[0]["initial"] != true || !strings.Contains(d.logs(), "corrupt") {
		t.Errorf("first event after the start %v; stderr:\n%s", evs[0], d.logs())
	}
}

// TestMetrics scrapes the endpoint after known events.
func TestMetrics(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	out := filepath.Join(dir, "events.json")
	// The daemon runs in ns, so its loopback listener is ns's loopback.
	writeFile(t, cfg, "interval: 200ms\nmetrics:\n  listen: 127.0.0.1:9477\nsinks:\n  - type: file\n    path: "+out+"\n")
	d := startWith(t, ns, cfg, out)
	time.Sleep(500 * time.Millisecond)
	ln := listenIn(t, ns, "tcp4", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	d.waitFor("appeared", 5*time.Second, func(evs []ev) bool { return len(match(evs, "appeared", "tcp", port)) > 0 })
	ln.Close()
	d.waitFor("closed", 5*time.Second, func(evs []ev) bool { return len(match(evs, "closed", "tcp", port)) > 0 })
	// The scrape's own connection makes events too: the counters must lie
	// between what the file held before and after it.
	before := d.events()
	var body string
	err := ns.Do(func() error {
		// Dial here, on the namespace's thread: http.Client would dial
		// from another goroutine, in the host namespace.
		c, err := net.Dial("tcp4", "127.0.0.1:9477")
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			got[line[:i]] = line[i+1:]
		}
	}
	time.Sleep(500 * time.Millisecond)
	after := d.events()
	count := func(evs []ev, kind string) int {
		n := 0
		for _, e := range evs {
			if e.str("event") == kind {
				n++
			}
		}
		return n
	}
	for _, k := range []string{"appeared", "closed"} {
		v := got[`connlogd_events_total{kind="`+k+`"}`]
		lo, hi := count(before, k), count(after, k)
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil || n < lo || n > hi || lo == 0 {
			t.Errorf("events_total{%s} = %q, want between %d and %d (the events written)", k, v, lo, hi)
		}
	}
	for _, k := range []string{
		`connlogd_sink_events_total{sink="sink file ` + out + `"}`,
		`connlogd_poll_duration_seconds_count`,
		`connlogd_namespaces`,
		`connlogd_sockets{family="ipv4",proto="tcp"}`,
		`connlogd_config_reloads_total{result="success"}`,
	} {
		if _, ok := got[k]; !ok {
			t.Errorf("metric %s missing; body:\n%s", k, body)
		}
	}
	if got["connlogd_namespaces"] != "1" {
		t.Errorf("namespaces = %q, want 1", got["connlogd_namespaces"])
	}
	// The file sink lost nothing, failed never, queues nothing; each
	// reason has its series.
	fileSink := `sink="sink file ` + out + `"`
	for _, k := range []string{
		`connlogd_sink_dropped_total{reason="queue_full",` + fileSink + `}`,
		`connlogd_sink_dropped_total{reason="output_failed",` + fileSink + `}`,
		`connlogd_sink_dropped_total{reason="shutdown",` + fileSink + `}`,
		`connlogd_sink_dropped_total{reason="refused",` + fileSink + `}`,
		`connlogd_sink_errors_total{` + fileSink + `}`,
		`connlogd_sink_queued_events{` + fileSink + `}`,
		`connlogd_destroy_overruns_total`,
		`connlogd_dump_failures_total`,
	} {
		if v, ok := got[k]; !ok || v != "0" {
			t.Errorf("metric %s = %q (present %v), want 0; body:\n%s", k, v, ok, body)
		}
	}
	if !strings.Contains(body, "connlogd_build_info{goversion=") {
		t.Errorf("build info missing; body:\n%s", body)
	}
	for k := range got {
		if strings.Contains(k, "cookie") || strings.Contains(k, "port=") {
			t.Errorf("per-connection label in %s", k)
		}
	}
}
