//go:build linux

package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/engine"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// minSockets is the smallest table worth benchmarking; below it we are
// almost certainly not inside the benchmark namespace.
const minSockets = 1000

const howToRun = "run inside the benchmark namespace: " +
	"bench/mkns.sh up && ip netns exec connlogd-bench go test -run XXX -bench . ./bench/ " +
	"(or bench/run.sh for everything)"

// daemonRequests are the dumps the daemon sends by default: TCP and UDP,
// IPv4 and IPv6, every state, tcp_info for TCP.
func daemonRequests() []diag.Request {
	return diag.Requests(
		[]snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
		[]snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, true)
}

var (
	setupOnce sync.Once
	// usable are the daemonRequests this kernel serves: like the daemon,
	// every benchmark leaves out a family or protocol it lacks.
	usable   []diag.Request
	sockets  int // sockets in the namespace, from one dump of usable
	setupErr error
)

// requireTable skips b unless the current namespace holds a large table,
// and returns the requests to dump and the number of sockets.
func requireTable(b *testing.B) ([]diag.Request, int) {
	b.Helper()
	setupOnce.Do(func() {
		for _, r := range daemonRequests() {
			d, err := newRawDump([]diag.Request{r})
			if err != nil {
				setupErr = err
				return
			}
			n, err := d.dump()
			d.close()
			switch {
			case err == nil:
				usable = append(usable, r)
				sockets += n
			case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAFNOSUPPORT),
				errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
				// The daemon drops these requests too.
			default:
				setupErr = fmt.Errorf("dump %v: %w", r, err)
				return
			}
		}
	})
	if setupErr != nil {
		b.Fatal(setupErr)
	}
	if sockets < minSockets {
		b.Skipf("this network namespace has %d sockets, fewer than %d: %s", sockets, minSockets, howToRun)
	}
	return usable, sockets
}

// processCPU returns the user+system CPU time of the whole process. It
// includes the kernel's work producing the dump, which runs inside our
// recvfrom calls, and the runtime's background work such as GC.
func processCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// loop runs op as the benchmark loop and reports, besides ns/op and
// allocations, the process CPU per op and the sockets op saw. It returns
// the number of ops.
func loop(b *testing.B, op func() (sockets int)) int {
	b.Helper()
	b.ReportAllocs()
	n, last := 0, 0
	c0 := processCPU()
	for b.Loop() {
		last = op()
		n++
	}
	c1 := processCPU()
	b.ReportMetric(float64(c1-c0)/float64(n), "cpu-ns/op")
	b.ReportMetric(float64(last), "sockets")
	return n
}

// BenchmarkMinimalDump is the baseline: the daemon's requests sent with
// plain syscalls, and nothing done with the replies but walking the
// netlink headers to NLMSG_DONE. No parser can cost less than this.
func BenchmarkMinimalDump(b *testing.B) {
	reqs, _ := requireTable(b)
	benchRawDump(b, reqs)
}

// BenchmarkMinimalDumpNoInfo is the baseline without INET_DIAG_INFO, as
// `ss -tan` asks: the difference to BenchmarkMinimalDump is what the
// kernel spends filling tcp_info.
// BenchmarkMinimalDumpPerFamily is the baseline with TCP asked for one
// family at a time (v2 requests, as ss does): the kernel walks its TCP
// hash once per family.
func BenchmarkMinimalDumpPerFamily(b *testing.B) {
	reqs, _ := requireTable(b)
	var split []diag.Request
	for _, r := range reqs {
		split = append(split, r.Split()...)
	}
	benchRawDump(b, split)
}

func BenchmarkMinimalDumpNoInfo(b *testing.B) {
	reqs, _ := requireTable(b)
	noInfo := make([]diag.Request, len(reqs))
	for i, r := range reqs {
		r.Ext = 0
		noInfo[i] = r
	}
	benchRawDump(b, noInfo)
}

var paced = flag.Duration("paced", 0, "run BenchmarkMinimalDumpPaced with this pause between dumps (run.sh: the daemon's interval)")

// BenchmarkMinimalDumpPaced is the baseline at the daemon's cadence: one
// dump per -paced interval instead of back to back. Between two polls a
// daemon's caches go cold, so its CPU per poll is compared with this one;
// the pause itself costs no CPU and is not timed.
func BenchmarkMinimalDumpPaced(b *testing.B) {
	reqs, _ := requireTable(b)
	if *paced <= 0 {
		b.Skip("needs -paced INTERVAL (go test ... -args -paced 1s)")
	}
	d, err := newRawDump(reqs)
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	loop(b, func() int {
		b.StopTimer()
		time.Sleep(*paced)
		b.StartTimer()
		n, err := d.dump()
		if err != nil {
			b.Fatal(err)
		}
		return n
	})
}

func benchRawDump(b *testing.B, reqs []diag.Request) {
	d, err := newRawDump(reqs)
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	loop(b, func() int {
		n, err := d.dump()
		if err != nil {
			b.Fatal(err)
		}
		return n
	})
}

// BenchmarkPoll is what the daemon does each poll: diag.Conn.DumpEach
// into two reused chunk tables, each chunk diffed (differ.Step) as it is
// read, then differ.Finish, with a table that does not change, so there
// are no events and no lookups. The daemon diffs on another goroutine
// than the dump's; the work is the same.
func BenchmarkPoll(b *testing.B) {
	reqs, _ := requireTable(b)
	benchPoll(b, reqs)
}

// BenchmarkPollListenersOnly polls only the listeners (a handful of
// sockets) through the same code: allocs/op equal to BenchmarkPoll's
// show that allocations do not grow with the socket count.
func BenchmarkPollListenersOnly(b *testing.B) {
	reqs, _ := requireTable(b)
	ls := make([]diag.Request, len(reqs))
	for i, r := range reqs {
		r.States = 1 << snapshot.StateListen
		ls[i] = r
	}
	benchPoll(b, ls)
}

// pollChunk is the daemon's chunk size.
const pollChunk = engine.DumpChunk

func benchPoll(b *testing.B, reqs []diag.Request) {
	conn, err := diag.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	tabs := [2]*snapshot.Table{{}, {}}
	d := differ.New(differ.Options{})
	sockets := 0
	flush := func(t *snapshot.Table) *snapshot.Table {
		d.Step(t, time.Now())
		sockets += t.Len()
		if t == tabs[0] {
			return tabs[1]
		}
		return tabs[0]
	}
	poll := func() ([]event.Event, error) {
		sockets = 0
		d.Begin()
		last, err := conn.DumpEach(tabs[0], reqs, pollChunk, flush)
		if err != nil {
			d.Abort()
			return nil, err
		}
		flush(last)
		return d.Finish(time.Now(), conn)
	}
	// Two polls before the loop: the first reports every socket as
	// appeared and sizes the tables and the differ's storage.
	for range 2 {
		if _, err := poll(); err != nil {
			b.Fatal(err)
		}
	}
	events := 0
	ops := loop(b, func() int {
		evs, err := poll()
		if err != nil {
			b.Fatal(err)
		}
		events += len(evs)
		return sockets
	})
	// Anything but 0 means the table was not steady and the figure
	// includes event work.
	b.ReportMetric(float64(events)/float64(ops), "events/op")
	if st := conn.Stats(); st.Malformed+st.Foreign != 0 {
		b.Errorf("netlink messages dropped: %+v (last: %v)", st, conn.LastMalformed())
	}
	b.ReportMetric(liveHeapMiB(), "heap-MiB")
	runtime.KeepAlive(d)
	runtime.KeepAlive(&tabs)
}

// liveHeapMiB returns the heap still in use after a collection: with the
// poller's table and differ alive, the floor of the daemon's own heap.
func liveHeapMiB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// BenchmarkParse is the user-space parsing share of a poll: the replies
// of one dump, captured once, fed to snapshot.DumpParser into a reused
// table. No syscalls.
func BenchmarkParse(b *testing.B) {
	reqs, _ := requireTable(b)
	d, err := newRawDump(reqs)
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	captured := make([][][]byte, len(reqs))
	d.tap = func(i int, dgram []byte) {
		captured[i] = append(captured[i], append([]byte(nil), dgram...))
	}
	if _, err := d.dump(); err != nil {
		b.Fatal(err)
	}
	var tab snapshot.Table
	var st snapshot.Stats
	parse := func() int {
		tab.Reset()
		for i, r := range reqs {
			p := snapshot.DumpParser{Seq: d.seq(i), Proto: r.Proto, Table: &tab, Stats: &st}
			for _, dg := range captured[i] {
				if _, err := p.Feed(dg); err != nil {
					b.Fatal(err)
				}
			}
		}
		return tab.Len()
	}
	parse() // sizes the table, as the daemon's first poll does
	loop(b, parse)
	if st != (snapshot.Stats{}) {
		b.Errorf("parser refused messages: %+v", st)
	}
}

// BenchmarkDiff is the differ's share of a steady poll: one table diffed
// against itself. No syscalls.
func BenchmarkDiff(b *testing.B) {
	reqs, _ := requireTable(b)
	conn, err := diag.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	var tab snapshot.Table
	if err := conn.Dump(&tab, reqs); err != nil {
		b.Fatal(err)
	}
	d := differ.New(differ.Options{})
	now := time.Now()
	// The first diff reports every socket; the second sizes the storage
	// that the differ swaps with the first's.
	d.Diff(&tab, now, nil)
	d.Diff(&tab, now, nil)
	events := 0
	loop(b, func() int {
		evs, _ := d.Diff(&tab, now, nil)
		events += len(evs)
		return tab.Len()
	})
	if events != 0 {
		b.Errorf("a table diffed against itself gave %d events", events)
	}
}

// BenchmarkSSTan runs `ss -tan` with its output to /dev/null; cpu-ns/op
// is the child's own user+system time, from its rusage.
func BenchmarkSSTan(b *testing.B) {
	_, n := requireTable(b)
	ss, err := exec.LookPath("ss")
	if err != nil {
		b.Skip("ss (iproute2) not found")
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	var cpu int64
	runs := 0
	for b.Loop() {
		var stderr bytes.Buffer
		cmd := exec.Command(ss, "-tan")
		cmd.Stdout = devnull // a file, so the child writes to it directly
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("ss -tan: %v: %s", err, stderr.Bytes())
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		cpu += ru.Utime.Nano() + ru.Stime.Nano()
		runs++
	}
	b.ReportMetric(float64(cpu)/float64(runs), "cpu-ns/op")
	// ss dumps TCP only; the UDP tables of the namespace are empty.
	b.ReportMetric(float64(n), "sockets")
}

// rawDump is the minimal dump: one NETLINK_SOCK_DIAG socket, requests
// encoded once, replies read into one 64 KiB buffer.
type rawDump struct {
	fd   int
	buf  []byte
	reqs [][]byte // one encoded request per diag.Request
	pfd  [1]unix.PollFd
	// tap, when set, sees every datagram of request i as received.
	tap func(i int, dgram []byte)
}

const (
	inetDiagReqV2Len = 56 // sizeof(struct inet_diag_req_v2)
	firstSeq         = 1
)

func newRawDump(reqs []diag.Request) (*rawDump, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	d := &rawDump{fd: fd, buf: make([]byte, 64<<10)}
	for i, r := range reqs {
		if len(r.Bytecode) > 0 {
			// Not a request of the daemon's today; encode it here first.
			unix.Close(fd)
			return nil, fmt.Errorf("%v: the minimal dump does not encode filter bytecode", r)
		}
		d.reqs = append(d.reqs, encodeDumpRequest(d.seq(i), r))
	}
	return d, nil
}

func (d *rawDump) close() { unix.Close(d.fd) }

// seq is the sequence number of request i; every dump reuses them.
func (d *rawDump) seq(i int) uint32 { return uint32(firstSeq + i) }

// encodeDumpRequest builds the request the daemon sends for r, with the
// daemon's encoder: a v2 SOCK_DIAG_BY_FAMILY dump of one family, or for
// TCP over both families one v1 TCPDIAG_GETSOCK dump (one walk of the
// kernel's hash instead of two). The baseline thus asks the kernel for
// exactly what the daemon asks; BenchmarkMinimalDumpPerFamily shows what
// the v1 request saves.
func encodeDumpRequest(seq uint32, r diag.Request) []byte {
	return snapshot.AppendDumpRequest(nil, seq, r.Family, r.Proto, r.Ext, r.States, r.Bytecode)
}

// dump runs every request and returns the number of sockets returned.
func (d *rawDump) dump() (int, error) {
	total := 0
	for i, req := range d.reqs {
		if _, err := unix.Write(d.fd, req); err != nil {
			return total, fmt.Errorf("send: %w", err)
		}
		n, err := d.drain(i)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// drain reads the replies of request i up to NLMSG_DONE.
func (d *rawDump) drain(i int) (int, error) {
	ne := binary.NativeEndian
	sockets := 0
	for {
		n, err := d.recv()
		if err != nil {
			return sockets, err
		}
		b := d.buf[:n]
		if d.tap != nil {
			d.tap(i, b)
		}
		for len(b) >= unix.SizeofNlMsghdr {
			l := int(ne.Uint32(b[0:4]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return sockets, fmt.Errorf("bad netlink message length %d", l)
			}
			switch ne.Uint16(b[4:6]) {
			case unix.NLMSG_DONE:
				return sockets, nil
			case unix.NLMSG_ERROR:
				if code := int32(ne.Uint32(b[unix.SizeofNlMsghdr:])); code != 0 {
					return sockets, unix.Errno(-code)
				}
			case unix.SOCK_DIAG_BY_FAMILY, snapshot.TCPDiagGetSock:
				sockets++
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
}

// recv reads one datagram the way diag.Conn does: a raw non-blocking
// recvfrom, which skips the runtime's syscall bookkeeping, and poll(2)
// only when nothing is queued. The baseline must not be slower than the
// daemon for reasons that have nothing to do with the dump.
func (d *rawDump) recv() (int, error) {
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(d.fd),
			uintptr(unsafe.Pointer(&d.buf[0])), uintptr(len(d.buf)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
		case unix.EAGAIN:
			d.pfd[0] = unix.PollFd{Fd: int32(d.fd), Events: unix.POLLIN}
			n, err := unix.Poll(d.pfd[:], 10_000)
			if err != nil && err != unix.EINTR {
				return 0, fmt.Errorf("poll: %w", err)
			}
			if n == 0 && err == nil {
				return 0, errors.New("no reply from the kernel in 10s")
			}
		default:
			return 0, fmt.Errorf("recvfrom: %w", errno)
		}
	}
}
