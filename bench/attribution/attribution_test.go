//go:build linux

// Package attributionbench measures socket attribution at the scale of
// the issue: ~100k sockets held by a handful of processes, beside ~1000
// idle processes. Run it with run.sh, which builds that namespace; see
// README.md.
package attributionbench

import (
	"bytes"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// minSockets is the smallest table worth measuring: below it this is not
// the benchmark namespace.
const minSockets = 10000

var (
	setupOnce sync.Once
	table     snapshot.Table
	setupErr  error
)

// requireTable dumps the namespace's sockets once, skipping b when there
// are too few.
func requireTable(b *testing.B) *snapshot.Table {
	b.Helper()
	setupOnce.Do(func() {
		var c *diag.Conn
		if c, setupErr = diag.Open(); setupErr != nil {
			return
		}
		defer c.Close()
		reqs := diag.Requests(
			[]snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
			[]snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, true)
		setupErr = c.Dump(&table, reqs)
	})
	if setupErr != nil {
		b.Fatal(setupErr)
	}
	if table.Len() < minSockets {
		b.Skipf("this network namespace has %d sockets, fewer than %d: run bench/attribution/run.sh", table.Len(), minSockets)
	}
	return &table
}

// processCPU returns the user+system CPU time of this process: the
// kernel's work behind our /proc reads runs in our syscalls.
func processCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

var cfg = config.Attribution{Process: true, Cgroup: true, CmdlineMaxBytes: config.DefaultCmdlineMaxBytes}

// BenchmarkBareFDLinks is the baseline: every descriptor link on the host
// read once, with nothing done with them. It lists /proc, opens each
// /proc/PID/fd, lists it with getdents64 and reads each entry with
// readlinkat relative to the directory, into reused buffers — the
// cheapest way to learn which process holds which socket. No
// /proc-based attribution can do less on its first pass.
func BenchmarkBareFDLinks(b *testing.B) {
	requireTable(b)
	b.ReportAllocs()
	dents := make([]byte, 64<<10)
	link := make([]byte, 256)
	var names []byte
	var offs []int
	links := 0
	c0 := processCPU()
	for b.Loop() {
		links = 0
		proc, err := unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		var pids []int
		eachName(proc, dents, func(name []byte) {
			if n, err := strconv.Atoi(string(name)); err == nil {
				pids = append(pids, n)
			}
		})
		unix.Close(proc)
		for _, pid := range pids {
			dir, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			names, offs = names[:0], offs[:0]
			eachName(dir, dents, func(name []byte) {
				offs = append(offs, len(names))
				names = append(names, name...)
				names = append(names, 0)
			})
			for _, off := range offs {
				if readlinkat(dir, &names[off], link) {
					links++
				}
			}
			unix.Close(dir)
		}
	}
	b.ReportMetric(float64(processCPU()-c0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(links), "links")
}

// eachName calls fn with each entry of the directory open at fd but . and ..
func eachName(fd int, buf []byte, fn func(name []byte)) {
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil || n <= 0 {
			return
		}
		for off := 0; off < n; {
			reclen := int(buf[off+16]) | int(buf[off+17])<<8
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if name[0] != '.' {
				fn(name)
			}
			off += reclen
		}
	}
}

func readlinkat(dirfd int, name *byte, buf []byte) bool {
	_, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	return e == 0
}

// attributed counts the table's sockets with an inode that got an owner.
func attributed(tr *attribution.Tracker, tab *snapshot.Table) (withInode, owned int) {
	evs := snapshotEvents(tab)
	tr.Annotate(evs)
	for i := range evs {
		if evs[i].Socket.Inode != 0 {
			withInode++
			if evs[i].Process != nil {
				owned++
			}
		}
	}
	return withInode, owned
}

// BenchmarkFirstPass: a Resolver's first Refresh of the whole table,
// from nothing: every socket's direction, cgroup and owner, which reads
// every descriptor link of the processes in the sockets' cgroups.
func BenchmarkFirstPass(b *testing.B) {
	tab := requireTable(b)
	b.ReportAllocs()
	var st attribution.Stats
	var tr *attribution.Tracker
	c0 := processCPU()
	for b.Loop() {
		r := attribution.New(cfg)
		tr = r.NewTracker()
		tr.Refresh(tab)
		st = r.Stats()
		r.Close()
	}
	b.ReportMetric(float64(processCPU()-c0)/float64(b.N), "cpu-ns/op")
	b.StopTimer()
	withInode, owned := attributed(tr, tab)
	b.ReportMetric(float64(tab.Len()), "sockets")
	b.ReportMetric(float64(owned)/float64(max(withInode, 1)), "owned-frac")
	b.ReportMetric(float64(st.Links), "links")
	b.ReportMetric(float64(st.FDTables), "tables")
}

// BenchmarkSteady: a Refresh of the same table once everything is known,
// what every poll costs while nothing changes.
func BenchmarkSteady(b *testing.B) {
	tab := requireTable(b)
	r := attribution.New(cfg)
	defer r.Close()
	tr := r.NewTracker()
	tr.Refresh(tab)
	tr.Refresh(tab) // the retry of sockets closed since the dump
	st0 := r.Stats()
	b.ReportAllocs()
	c0 := processCPU()
	for b.Loop() {
		tr.Refresh(tab)
	}
	b.ReportMetric(float64(processCPU()-c0)/float64(b.N), "cpu-ns/op")
	st := r.Stats()
	b.ReportMetric(float64(st.Links-st0.Links)/float64(b.N), "links/op")
	b.ReportMetric(float64(st.FDTables-st0.FDTables)/float64(b.N), "tables/op")
}

// BenchmarkSSTanp: `ss -tanp` to /dev/null, which maps sockets to
// processes by reading every descriptor link too; its CPU is the
// child's own.
func BenchmarkSSTanp(b *testing.B) {
	requireTable(b)
	path, err := exec.LookPath("ss")
	if err != nil {
		b.Skip("needs ss (iproute2)")
	}
	var cpu int64
	for b.Loop() {
		cmd := exec.Command(path, "-tanp")
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		cpu += ru.Utime.Nano() + ru.Stime.Nano()
	}
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}

// snapshotEvents returns one Snapshot event per socket of tab, as
// `connlogd -once` would write them.
func snapshotEvents(tab *snapshot.Table) []event.Event {
	evs := make([]event.Event, tab.Len())
	for i := range tab.Sockets {
		evs[i] = event.Event{Kind: event.Snapshot, Socket: tab.Sockets[i]}
	}
	return evs
}

// BenchmarkNewConnection: a Refresh in which one connection is new (both
// its ends, held by this process), everything else known. Here every
// process is in one cgroup, the worst case for the search: it lists the
// descriptor table of every process with a lower pid than ours, reading
// no link it read before.
func BenchmarkNewConnection(b *testing.B) {
	tab := requireTable(b)
	r := attribution.New(cfg)
	defer r.Close()
	tr := r.NewTracker()
	tr.Refresh(tab)
	tr.Refresh(tab)
	c, err := diag.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	reqs := diag.Requests([]snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
		[]snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, true)
	var cur snapshot.Table
	var cpu int64
	st0 := r.Stats()
	for b.Loop() {
		b.StopTimer()
		cl, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		sv, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Dump(&cur, reqs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := processCPU()
		tr.Refresh(&cur)
		cpu += processCPU() - c0
		b.StopTimer()
		evs := []event.Event{{Kind: event.Appeared, Socket: *findLocal(&cur, cl.LocalAddr())}}
		tr.Annotate(evs)
		if evs[0].Process == nil {
			b.Fatal("the new connection has no owner")
		}
		cl.Close()
		sv.Close()
		b.StartTimer()
	}
	st := r.Stats()
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(st.Links-st0.Links)/float64(b.N), "links/op")
	b.ReportMetric(float64(st.FDTables-st0.FDTables)/float64(b.N), "tables/op")
}

// findLocal returns the socket of tab whose local address is a.
func findLocal(tab *snapshot.Table, a net.Addr) *snapshot.Socket {
	want := a.(*net.TCPAddr).AddrPort()
	for i := range tab.Sockets {
		if s := &tab.Sockets[i]; s.Src.Port() == want.Port() && s.Src.Addr().Unmap() == want.Addr().Unmap() {
			return s
		}
	}
	panic("connection not in the dump")
}
