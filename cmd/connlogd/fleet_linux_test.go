//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/internal/otelcoltest"
)

// fleetHost is one simulated host: a network namespace with a TCP server,
// watched by its own connlogd, which runs in the root namespace with
// `namespaces: [that one]` and an otlp sink with a spool.
type fleetHost struct {
	ns      *netnstest.NS
	tcp     string // the server's address in ns
	udp     string
	cfg     string
	d       *proc
	clients map[int]bool // local ports of the connections made
	round   map[int]int
	rounds  int
}

func startFleetDaemon(t *testing.T, h *fleetHost) {
	t.Helper()
	d := &proc{t: t, out: filepath.Join(filepath.Dir(h.cfg), "events.json"), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(connlogdBin, "-config", h.cfg)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)
	h.d = d
	// Ready: it says it is watching (after its first poll, as it tells
	// systemd), and the server's listener is in the table.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(d.logs(), "msg=watching") {
		if time.Now().After(deadline) {
			t.Fatalf("connlogd not watching after a minute: %s", d.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, port, _ := net.SplitHostPort(h.tcp)
	d.waitFor("the listener", time.Minute, func(evs []ev) bool {
		for _, e := range evs {
			if e.str("state") == "listen" && e.num("src_port") == num(port) {
				return true
			}
		}
		return false
	})
}

// traffic makes n short TCP connections in each host's namespace.
func traffic(t *testing.T, hosts []*fleetHost, n int) {
	t.Helper()
	for _, h := range hosts {
		ports, _ := shortLived(t, h.ns, h.tcp, h.udp, n, 0, 2, 300*time.Millisecond)
		for p := range ports {
			h.clients[p] = true
			h.round[p] = h.rounds
		}
		h.rounds++
	}
}

// TestFleetOTLPSpool: ten hosts send to one OpenTelemetry Collector; the
// collector is stopped for 30 s while traffic goes on, and one connlogd
// is killed with SIGKILL meanwhile and started again on the same spool.
// In the collector's output, every connection the traffic made has its
// appeared and closed events, for both its sockets; every event any
// daemon wrote to its file sink arrived; copies are counted by event_id.
func TestFleetOTLPSpool(t *testing.T) {
	netnstest.Require(t)
	col := otelcoltest.Start(t)
	const nhosts = 10
	// Host 1 serves its metrics: the spool's gauges are checked during
	// the outage and after.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	var hosts []*fleetHost
	for i := range nhosts {
		ns := netnstest.New(t)
		tcp, udp := servers(t, ns)
		dir := t.TempDir()
		h := &fleetHost{ns: ns, tcp: tcp, udp: udp, cfg: filepath.Join(dir, "config.yaml"), clients: map[int]bool{}, round: map[int]int{}}
		body := fmt.Sprintf(`interval: 1s
namespaces: [%s]
sinks:
  - type: otlp
    endpoint: %s
    drain_timeout: 10s
    spool:
      dir: %s
  - type: file
    path: %s
`, ns.Name, col.Endpoint(), filepath.Join(dir, "spool"), filepath.Join(dir, "events.json"))
		if i == 1 {
			body += "metrics:\n  listen: " + metricsAddr + "\n"
		}
		if err := os.WriteFile(h.cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	for _, h := range hosts {
		startFleetDaemon(t, h)
	}

	traffic(t, hosts, 20)
	col.Stop()
	down := time.Now()
	traffic(t, hosts, 20)

	// Host 0's connlogd dies by SIGKILL once its closes are written (in
	// its spool, and in its file sink, which says so), and starts again
	// on the same spool; its events exist only in the spool meanwhile.
	h0 := hosts[0]
	_, port0, _ := net.SplitHostPort(h0.tcp)
	h0.d.waitFor("host 0's closes", time.Minute, func(evs []ev) bool {
		closed := map[int]bool{}
		for _, e := range evs {
			if e.str("event") == "closed" && e.num("dst_port") == num(port0) {
				closed[int(e.num("src_port"))] = true
			}
		}
		for p := range h0.clients {
			if !closed[p] {
				return false
			}
		}
		return true
	})
	h0.d.cmd.Process.Signal(syscall.SIGKILL)
	<-h0.d.done
	startFleetDaemon(t, h0)

	traffic(t, hosts, 20)
	if wait := 30*time.Second - time.Since(down); wait > 0 {
		time.Sleep(wait) // the outage lasts 30 s by design, not to wait for a condition
	}
	// The outage in host 1's metrics: its events wait in the spool.
	spoolSink := `sink="sink otlp ` + col.Endpoint() + `"`
	m := scrapeMetrics(t, metricsAddr)
	for _, k := range []string{"connlogd_sink_spool_events", "connlogd_sink_spool_bytes", "connlogd_sink_spool_oldest_age_seconds", "connlogd_sink_queued_events"} {
		if v := m[k+"{"+spoolSink+"}"]; v <= 0 {
			t.Errorf("during the outage, %s = %v, want > 0", k, v)
		}
	}
	if age := m["connlogd_sink_spool_oldest_age_seconds{"+spoolSink+"}"]; age < 20 {
		t.Errorf("during a 30 s outage, the oldest spooled event is %v s old", age)
	}
	col.Restart()
	traffic(t, hosts, 20)

	// Every client connection: appeared and closed for the client's
	// socket (src_port p) and the server's (dst_port p).
	missing := func(recs []otelcoltest.Record) []string {
		seen := map[string]bool{}
		for _, r := range recs {
			b := r.Body()
			if b["proto"] != "tcp" {
				continue
			}
			seen[fmt.Sprintf("%v %v %v %v ", b["netns_name"], b["event"], b["src_port"], b["dst_port"])] = true
		}
		var out []string
		for _, h := range hosts {
			_, sport, _ := net.SplitHostPort(h.tcp)
			for p := range h.clients {
				ps := strconv.Itoa(p)
				for _, k := range []string{
					fmt.Sprintf("%s appeared %s %s ", h.ns.Name, ps, sport),
					fmt.Sprintf("%s closed %s %s ", h.ns.Name, ps, sport),
					fmt.Sprintf("%s appeared %s %s ", h.ns.Name, sport, ps),
					fmt.Sprintf("%s closed %s %s ", h.ns.Name, sport, ps),
				} {
					if !seen[k] {
						out = append(out, k)
					}
				}
			}
		}
		return out
	}
	var recs []otelcoltest.Record
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var err error
		if recs, err = col.Records(); err != nil {
			t.Fatal(err)
		}
		m := missing(recs)
		if len(m) == 0 {
			break
		}
		if time.Now().After(deadline) {
			by := map[string]int{}
			for _, k := range m {
				var ns, kind string
				var a, b int
				fmt.Sscanf(k, "%s %s %d %d", &ns, &kind, &a, &b)
				h := 0
				for i := range hosts {
					if hosts[i].ns.Name == ns {
						h = i
					}
				}
				p := a
				if !hosts[h].clients[a] {
					p = b
				}
				by[fmt.Sprintf("host %d round %d %s", h, hosts[h].round[p], kind)]++
			}
			t.Logf("missing by host, round and kind: %v", by)
			// Were they produced (in the host's file sink) and not
			// delivered, or never produced?
			inFile := map[string]bool{}
			for _, h := range hosts {
				for _, e := range h.d.events() {
					inFile[fmt.Sprintf("%s %s %v %v ", h.ns.Name, e.str("event"), numStr(e["src_port"]), numStr(e["dst_port"]))] = true
				}
			}
			produced := 0
			for _, k := range m {
				if inFile[k] {
					produced++
				}
			}
			t.Logf("of the missing, %d are in their daemon's file sink (produced, not delivered), %d are not (never produced)", produced, len(m)-produced)
			t.Logf("host 0 stderr:\n%s", hosts[0].d.logs())
			t.Fatalf("%d of the traffic's events never reached the collector, such as %q", len(m), m[:min(5, len(m))])
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Delivered: host 1's spool is empty again.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		m := scrapeMetrics(t, metricsAddr)
		if m["connlogd_sink_spool_events{"+spoolSink+"}"] == 0 && m["connlogd_sink_spool_oldest_age_seconds{"+spoolSink+"}"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host 1's spool not empty a minute after delivery: %v", m)
		}
	}

	// Every event a daemon wrote (its file sink has them all, both runs of
	// host 0) reached the collector once the daemons have stopped (each
	// drains its spool at SIGTERM); count what came more than once.
	for _, h := range hosts {
		h.d.stop()
	}
	type fileEvent struct {
		host int
		key  string
		e    ev
	}
	var written []fileEvent
	for i, h := range hosts {
		starts := 0
		for _, e := range h.d.events() {
			if e.str("event") == "gap" {
				if e.str("reason") != "not_running" {
					t.Errorf("host %d reported a gap: %v", i, e)
					continue
				}
				starts++ // where each run's watching began: delivered like any event
			}
			if e.str("event_id") == "" {
				t.Fatalf("host %d: an event without event_id: %v", i, e)
			}
			written = append(written, fileEvent{i, e.str("event_id"), e})
		}
		// Host 0 ran twice (killed, then started again on its spool).
		if want := map[bool]int{true: 2, false: 1}[i == 0]; starts != want {
			t.Errorf("host %d wrote %d not_running gaps, want %d: one at each start", i, starts, want)
		}
	}
	var got map[string]int
	var lost []fileEvent
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var err error
		if recs, err = col.Records(); err != nil {
			t.Fatal(err)
		}
		got = map[string]int{}
		for _, r := range recs {
			b := r.Body()
			got[numStr(b["event_id"])]++
		}
		lost = lost[:0]
		for _, w := range written {
			if got[w.key] == 0 {
				lost = append(lost, w)
			}
		}
		if len(lost) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, w := range lost {
		t.Errorf("host %d: event not in the collector's output: %v", w.host, w.e)
	}
	// event_id is the same in every copy of an event: what the collector
	// has more than once was delivered again (at least once delivery),
	// and a pipeline drops the copies by it.
	dups, conns := 0, 0
	for _, n := range got {
		dups += n - 1
	}
	for _, h := range hosts {
		conns += len(h.clients)
	}
	t.Logf("%d hosts, %d connections, %d events written, %d records in the collector, %d delivered more than once (by event_id)",
		nhosts, conns, len(written), len(recs), dups)
}

// scrapeMetrics reads a daemon's metrics: each series (name{labels}) and
// its value.
func scrapeMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err == nil {
				m[line[:i]] = v
			}
		}
	}
	return m
}

// numStr writes a decoded JSON number as the collector's records show it.
func numStr(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
