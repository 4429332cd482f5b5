//go:build linux

package nsbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/snapshot"
)

// ownHashEntries is the size of the per-namespace TCP established and UDP
// hash tables of the OwnHash benchmarks (net.ipv4.tcp_child_ehash_entries
// and udp_child_hash_entries in the namespace that creates them).
const ownHashEntries = 1024

// Requests. daemonReqs are what the daemon sends for its defaults (TCP and
// UDP over IPv4 and IPv6, tcp_info): TCP over both families as one v1
// request. v2Reqs are the same with TCP as one v2 request per family.
var (
	daemonReqs = diag.Requests(
		[]snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
		[]snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, true)
	tcpV1, tcpV2, udpReqs, v2Reqs []diag.Request
)

func init() {
	for _, r := range daemonReqs {
		switch {
		case r.Proto == snapshot.ProtoTCP && r.Family == snapshot.FamilyAny:
			tcpV1 = append(tcpV1, r)
			tcpV2 = append(tcpV2, r.Split()...)
		case r.Proto == snapshot.ProtoTCP:
			tcpV2 = append(tcpV2, r) // diag.Requests no longer uses v1
		default:
			udpReqs = append(udpReqs, r)
		}
	}
	v2Reqs = append(append(v2Reqs, tcpV2...), udpReqs...)
}

// BenchmarkEmptyV2 polls an empty namespace with one v2 request per
// family: tcp/ipv4, tcp/ipv6, udp/ipv4, udp/ipv6. Each TCP request walks
// the whole host-wide established hash.
func BenchmarkEmptyV2(b *testing.B) { benchDump(b, setup(b, false, false), v2Reqs, 0) }

// BenchmarkEmptyV1 polls an empty namespace with the daemon's requests:
// TCP over both families in one v1 request, then udp/ipv4, udp/ipv6.
func BenchmarkEmptyV1(b *testing.B) { benchDump(b, setup(b, false, false), needV1(b), 0) }

// BenchmarkEmptyTCPV2 is the TCP share of BenchmarkEmptyV2.
func BenchmarkEmptyTCPV2(b *testing.B) { benchDump(b, setup(b, false, false), tcpV2, 0) }

// BenchmarkEmptyTCPV1 is the TCP share of BenchmarkEmptyV1: the dump the
// daemon skips when sockstat counts no TCP socket.
func BenchmarkEmptyTCPV1(b *testing.B) {
	needV1(b)
	benchDump(b, setup(b, false, false), tcpV1, 0)
}

// BenchmarkEmptyTCPV1NoBound is BenchmarkEmptyTCPV1 without
// TCPF_BOUND_INACTIVE in the state mask (Linux 6.8+ dumps bound, inactive
// sockets only when asked): the kernel then skips the walk that finds
// them, which goes through the sockets of every namespace even where the
// namespace has its own hashes (compare the OwnHash…Load benchmarks): the
// bind hash is host-wide. A daemon whose states leave out close could ask
// this way.
func BenchmarkEmptyTCPV1NoBound(b *testing.B) {
	needV1(b)
	benchDump(b, setup(b, false, false), noBound(tcpV1), 0)
}

// BenchmarkEmptyUDP is the UDP share of both: udp/ipv4 and udp/ipv6, each
// a walk of the host-wide UDP hash. The daemon still makes these dumps in
// an empty namespace.
func BenchmarkEmptyUDP(b *testing.B) { benchDump(b, setup(b, false, false), udpReqs, 0) }

// BenchmarkEmptySockstat is the sockstat read alone: both files, opened
// inside the namespace once, read and parsed each op as the daemon's
// watch.activeRequests does; what the daemon does instead of a TCP dump.
func BenchmarkEmptySockstat(b *testing.B) {
	f := setup(b, false, false)
	loop(b, f, func() int {
		in4, tw, ok4 := f.statCount(f.stat, "TCP:")
		in6, _, ok6 := f.statCount(f.stat6, "TCP6:")
		if !ok4 || !ok6 || in4+in6+tw != 0 {
			b.Fatalf("sockstat: TCP inuse %d tw %d (ok %v), TCP6 inuse %d (ok %v): want an empty namespace", in4, tw, ok4, in6, ok6)
		}
		return 0
	})
}

// BenchmarkEmptySkip is the daemon's whole poll of an empty namespace:
// the sockstat read, which drops the TCP dump, and the UDP dumps.
func BenchmarkEmptySkip(b *testing.B) {
	f := setup(b, false, false)
	reqs := needV1(b)
	var active []diag.Request
	loop(b, f, func() int {
		active = f.activeRequests(active[:0], reqs)
		if len(active) != len(udpReqs) {
			b.Fatalf("sockstat kept %v of %v: want the UDP requests only", active, reqs)
		}
		return f.dump(b, active)
	})
}

// BenchmarkFewV2 is BenchmarkEmptyV2 in a namespace with a few sockets
// (a TCP listener, one established loopback pair, one UDP socket).
func BenchmarkFewV2(b *testing.B) { benchDump(b, setup(b, false, true), v2Reqs, fewSockets) }

// BenchmarkFewV1 is BenchmarkEmptyV1 with those sockets: the daemon's poll
// of a namespace that has any TCP socket.
func BenchmarkFewV1(b *testing.B) { benchDump(b, setup(b, false, true), needV1(b), fewSockets) }

// BenchmarkFewV1NoBound is BenchmarkFewV1 without TCPF_BOUND_INACTIVE.
func BenchmarkFewV1NoBound(b *testing.B) {
	benchDump(b, setup(b, false, true), noBound(needV1(b)), fewSockets)
}

// BenchmarkOwnHashEmptyV1 is BenchmarkEmptyV1 in a namespace created with
// its own TCP and UDP hash tables of ownHashEntries buckets: a dump walks
// those instead of the host-wide ones.
func BenchmarkOwnHashEmptyV1(b *testing.B) { benchDump(b, setup(b, true, false), needV1(b), 0) }

// BenchmarkOwnHashFewV1 is BenchmarkFewV1 with the namespace's own hashes.
func BenchmarkOwnHashFewV1(b *testing.B) {
	benchDump(b, setup(b, true, true), needV1(b), fewSockets)
}

// BenchmarkOwnHashFewV1NoBound is BenchmarkOwnHashFewV1 without
// TCPF_BOUND_INACTIVE: the bind hash is host-wide even when the
// established and UDP hashes are the namespace's own.
func BenchmarkOwnHashFewV1NoBound(b *testing.B) {
	benchDump(b, setup(b, true, true), noBound(needV1(b)), fewSockets)
}

// BenchmarkOwnHashEmptyV1NoBound is BenchmarkOwnHashEmptyV1 without
// TCPF_BOUND_INACTIVE.
func BenchmarkOwnHashEmptyV1NoBound(b *testing.B) {
	benchDump(b, setup(b, true, false), noBound(needV1(b)), 0)
}

// The Load benchmarks are their namesakes with loadPairs connections open
// in another namespace (which shares the host's hashes): the difference,
// divided by the sockets added, is what each TCP socket elsewhere on the
// host costs a dump of this namespace.

// BenchmarkEmptyV1Load is BenchmarkEmptyV1 with the load.
func BenchmarkEmptyV1Load(b *testing.B) {
	f := setup(b, false, false)
	f.load = addLoad(b)
	benchDump(b, f, needV1(b), 0)
}

// BenchmarkOwnHashEmptyV1Load is BenchmarkOwnHashEmptyV1 with the load.
func BenchmarkOwnHashEmptyV1Load(b *testing.B) {
	f := setup(b, true, false)
	f.load = addLoad(b)
	benchDump(b, f, needV1(b), 0)
}

// BenchmarkOwnHashEmptyV1NoBoundLoad is BenchmarkOwnHashEmptyV1NoBound
// with the load.
func BenchmarkOwnHashEmptyV1NoBoundLoad(b *testing.B) {
	f := setup(b, true, false)
	f.load = addLoad(b)
	benchDump(b, f, noBound(needV1(b)), 0)
}

// loadPairs is the connections the Load benchmarks open elsewhere: 2
// sockets each, plus their listener.
const loadPairs = 5000

// addLoad creates a shared-hash namespace holding loadPairs loopback
// connections, removed when b ends, and returns its socket count.
func addLoad(b *testing.B) int {
	b.Helper()
	name := fmt.Sprintf("connlogd-nsbench-b%d-%d-load", os.Getpid(), nsCounter.Add(1))
	createNS(b, name, 0)
	b.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			b.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ip(b, "-n", name, "link", "set", "lo", "up")
	var socks []io.Closer
	b.Cleanup(func() {
		for _, c := range socks {
			c.Close()
		}
	})
	err := inNS("/run/netns/"+name, func() error {
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		socks = append(socks, ln)
		d := net.Dialer{KeepAlive: -1}
		for range loadPairs {
			c, err := d.Dial("tcp4", ln.Addr().String())
			if err != nil {
				return err
			}
			socks = append(socks, c)
			a, err := ln.Accept()
			if err != nil {
				return err
			}
			socks = append(socks, a)
			// Closed with a reset: no TIME_WAIT left behind to load the
			// benchmarks that follow.
			c.(*net.TCPConn).SetLinger(0)
			a.(*net.TCPConn).SetLinger(0)
		}
		return nil
	})
	if err != nil {
		b.Fatalf("load in %s: %v (the fd limit must exceed %d)", name, err, 2*loadPairs+spareFDs)
	}
	return len(socks)
}

// spareFDs covers what the benchmark process has open besides the load.
const spareFDs = 64

// noBound returns reqs with TCP asking for every state but
// bound-inactive.
func noBound(reqs []diag.Request) []diag.Request {
	out := append([]diag.Request(nil), reqs...)
	for i := range out {
		if out[i].Proto == snapshot.ProtoTCP {
			out[i].States &^= 1 << snapshot.StateBoundInactive
		}
	}
	return out
}

// needV1 returns the daemon's requests, skipping b if diag.Requests no
// longer asks for TCP over both families in one request.
func needV1(b *testing.B) []diag.Request {
	b.Helper()
	if len(tcpV1) == 0 {
		b.Skip("diag.Requests makes no TCP request for both families (v1)")
	}
	return daemonReqs
}

func benchDump(b *testing.B, f *fixture, reqs []diag.Request, want int) {
	b.Helper()
	if n := f.dump(b, reqs); n != want {
		// Not the namespace we built: a wrong setns, or a kernel that
		// lists sockets of other namespaces.
		b.Fatalf("%v returned %d sockets, want %d", reqs, n, want)
	}
	loop(b, f, func() int { return f.dump(b, reqs) })
}

// fewSockets is what fill opens: listener, both ends of one connection,
// one UDP socket.
const fewSockets = 4

// fixture is one benchmark's namespace and what it opened inside.
type fixture struct {
	name        string
	conn        *diag.Conn
	tab         snapshot.Table
	stat, stat6 *os.File
	statBuf     []byte
	buckets     int // the namespace's tcp_ehash_entries; negative: shared
	load        int // TCP sockets added elsewhere (the Load benchmarks)
}

var nsCounter atomic.Int64

// setup creates a namespace with loopback up (with its own hash tables
// when ownHash), fills it with fewSockets sockets when few, opens a
// diag.Conn and the sockstat files inside it, and removes it all when b
// ends.
func setup(b *testing.B, ownHash, few bool) *fixture {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skip("needs the ip command (iproute2)")
	}
	f := &fixture{
		name:    fmt.Sprintf("connlogd-nsbench-b%d-%d", os.Getpid(), nsCounter.Add(1)),
		statBuf: make([]byte, 512),
	}
	path := "/run/netns/" + f.name
	entries := 0
	if ownHash {
		entries = ownHashEntries
	}
	createNS(b, f.name, entries)
	b.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", f.name).CombinedOutput(); err != nil {
			b.Errorf("ip netns del %s: %v: %s", f.name, err, out)
		}
	})
	ip(b, "-n", f.name, "link", "set", "lo", "up")
	var closers []io.Closer
	b.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	err := inNS(path, func() error {
		c, err := diag.Open()
		if err != nil {
			return err
		}
		closers = append(closers, c)
		f.conn = c
		for _, p := range []struct {
			dst  **os.File
			name string
		}{{&f.stat, "sockstat"}, {&f.stat6, "sockstat6"}} {
			fh, err := os.Open("/proc/thread-self/net/" + p.name)
			if err != nil {
				return err
			}
			closers = append(closers, fh)
			*p.dst = fh
		}
		if v, err := os.ReadFile("/proc/sys/net/ipv4/tcp_ehash_entries"); err == nil {
			f.buckets, _ = strconv.Atoi(strings.TrimSpace(string(v)))
		}
		if few {
			socks, err := fill()
			closers = append(closers, socks...)
			return err
		}
		return nil
	})
	if err != nil {
		b.Fatalf("setting up %s: %v", f.name, err)
	}
	switch {
	case ownHash && f.buckets <= 0:
		b.Skipf("the namespace shares the host's TCP hash (tcp_ehash_entries %d): kernel before 5.19?", f.buckets)
	case !ownHash && f.buckets > 0:
		b.Skipf("the namespace has its own TCP hash of %d buckets (the host sets net.ipv4.tcp_child_ehash_entries, and nsenter is missing)", f.buckets)
	}
	return f
}

// createNS creates namespace name. The size of a new namespace's TCP
// established and UDP hashes comes from net.ipv4.tcp_child_ehash_entries
// and udp_child_hash_entries of the namespace that creates it (0: share
// the host-wide ones), so it is created from a scratch parent namespace
// that sets both to entries: the result does not depend on the host's
// settings, which are left alone. Without nsenter, a shared-hash
// namespace is created directly.
func createNS(b *testing.B, name string, entries int) {
	b.Helper()
	if _, err := exec.LookPath("nsenter"); err != nil {
		if entries != 0 {
			b.Skip("needs nsenter (util-linux)")
		}
		ip(b, "netns", "add", name)
		return
	}
	parent := name + "-parent"
	ip(b, "netns", "add", parent)
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", parent).CombinedOutput(); err != nil {
			b.Errorf("ip netns del %s: %v: %s", parent, err, out)
		}
	}()
	v := []byte(strconv.Itoa(entries))
	err := inNS("/run/netns/"+parent, func() error {
		for _, s := range []string{"tcp_child_ehash_entries", "udp_child_hash_entries"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/"+s, v, 0o644); err != nil && (entries != 0 || !os.IsNotExist(err)) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Skipf("per-namespace hash tables unavailable: %v", err)
	}
	// nsenter --net enters the network namespace only: `ip netns add`
	// then runs in our mount namespace, where its bind mount must be.
	if out, err := exec.Command("nsenter", "--net=/run/netns/"+parent, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add %s inside %s: %v: %s", name, parent, err, out)
	}
}

func ip(b *testing.B, args ...string) {
	b.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		b.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on an OS thread that has entered the namespace at path.
// The thread is discarded afterwards instead of going back: sockets fn
// creates belong to the namespace whichever thread uses them later.
func inNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Ends locked: the runtime terminates the thread.
		runtime.LockOSThread()
		target, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// fill opens, in the current thread's namespace, what nsfill opens.
func fill() ([]io.Closer, error) {
	var socks []io.Closer
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return socks, err
	}
	socks = append(socks, ln)
	d := net.Dialer{KeepAlive: -1}
	c, err := d.Dial("tcp4", ln.Addr().String())
	if err != nil {
		return socks, err
	}
	socks = append(socks, c)
	a, err := ln.Accept()
	if err != nil {
		return socks, err
	}
	socks = append(socks, a)
	u, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
	if err != nil {
		return socks, err
	}
	return append(socks, u), nil
}

func (f *fixture) dump(b *testing.B, reqs []diag.Request) int {
	if err := f.conn.Dump(&f.tab, reqs); err != nil {
		b.Fatal(err)
	}
	return f.tab.Len()
}

// activeRequests and statCount are cmd/connlogd's watch methods of the
// same names: a TCP dump of a family whose sockstat counts no socket is
// left out.
func (f *fixture) activeRequests(buf, reqs []diag.Request) []diag.Request {
	in4, tw, ok4 := f.statCount(f.stat, "TCP:")
	in6, _, ok6 := f.statCount(f.stat6, "TCP6:")
	for _, r := range reqs {
		if r.Proto == snapshot.ProtoTCP && ok4 && tw == 0 &&
			((r.Family == snapshot.FamilyIPv4 && in4 == 0) || (r.Family == snapshot.FamilyIPv6 && ok6 && in6 == 0) ||
				(r.Family == snapshot.FamilyAny && ok6 && in4 == 0 && in6 == 0)) {
			continue
		}
		buf = append(buf, r)
	}
	return buf
}

func (f *fixture) statCount(fh *os.File, prefix string) (inuse, tw int, ok bool) {
	m, err := fh.ReadAt(f.statBuf, 0)
	if m == 0 || (err != nil && m == len(f.statBuf)) {
		return 0, 0, false
	}
	return netns.ParseSockstat(f.statBuf[:m], prefix)
}

// processCPU returns the user+system CPU time of the whole process. It
// includes the kernel's work producing the dump, which runs inside our
// recvfrom calls.
func processCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// hostTCP returns the TCP sockets of every namespace, TIME_WAIT included:
// what a walk of the shared established hash goes through besides its
// empty buckets. sockstat's alloc counts every namespace's sockets but no
// TIME_WAIT one, and its tw those of its own namespace only, so the tw of
// each namespace is added: those named in /run/netns and those of
// processes, each entered once.
func hostTCP() int {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return -1
	}
	total := sockstatField(b, "alloc")
	paths, _ := filepath.Glob("/run/netns/*")
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	seen := map[uint64]bool{}
	for _, p := range append(paths, procs...) {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		inNS(p, func() error {
			b, err := os.ReadFile("/proc/thread-self/net/sockstat")
			if err == nil {
				total += sockstatField(b, "tw")
			}
			return err
		})
	}
	return total
}

// sockstatField returns a field of the TCP: line of a sockstat file.
func sockstatField(b []byte, name string) int {
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "TCP:"); ok {
			fs := strings.Fields(rest)
			for i := 0; i+1 < len(fs); i += 2 {
				if fs[i] == name {
					n, _ := strconv.Atoi(fs[i+1])
					return n
				}
			}
		}
	}
	return 0
}

// loop runs op as the benchmark loop and reports, besides ns/op, the
// process CPU per op (cpu-ns/op), the sockets op returned, the host-wide
// TCP sockets at the end (host-tcp) and their change during the loop
// (host-tcp-delta: other users' sockets, which a shared-hash walk goes
// through), the namespace's TCP hash buckets (negative: the host's,
// shared), and the sockets a Load benchmark added.
func loop(b *testing.B, f *fixture, op func() (sockets int)) {
	b.Helper()
	n, last := 0, 0
	h0 := hostTCP()
	c0 := processCPU()
	for b.Loop() {
		last = op()
		n++
	}
	c1 := processCPU()
	b.ReportMetric(float64(c1-c0)/float64(n), "cpu-ns/op")
	b.ReportMetric(float64(last), "sockets")
	h1 := hostTCP()
	b.ReportMetric(float64(h1), "host-tcp")
	b.ReportMetric(float64(h1-h0), "host-tcp-delta")
	b.ReportMetric(float64(f.buckets), "buckets")
	if f.load > 0 {
		b.ReportMetric(float64(f.load), "load")
	}
}
