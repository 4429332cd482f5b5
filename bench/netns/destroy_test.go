//go:build linux

package nsbench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/snapshot"
)

// TestDestroySubscriptions compares the two ways of receiving the socket
// destroy notifications of N namespaces:
//
//   - A, what the daemon does: one subscription socket per namespace,
//     created inside it, all of them in one epoll set;
//   - B: one socket in the host namespace with NETLINK_LISTEN_ALL_NSID,
//     after giving every namespace an nsid in the host namespace
//     (RTM_NEWNSID), each message mapped to its namespace by the nsid of
//     its control message.
//
// For N in NSBENCH_DESTROY_COUNTS it creates N namespaces with a TCP
// listener on loopback each, and then, in NSBENCH_DESTROY_ROUNDS rounds,
// alternating which design goes first, opens one design's sockets, lets
// its receiver (a locked OS thread in the host namespace) wait idle, then
// opens and closes NSBENCH_DESTROY_CONNS loopback connections spread
// evenly over the namespaces while the receiver drains, and closes the
// sockets again. A "paused" run per design then queues the same load
// with the receiver stopped, and drains it afterwards.
//
// It is not a benchmark (run.sh runs those): it runs only with
// NSBENCH_DESTROY=1, as root. See README.md.
func TestDestroySubscriptions(t *testing.T) {
	if os.Getenv("NSBENCH_DESTROY") != "1" {
		t.Skip("set NSBENCH_DESTROY=1 to measure (as root; about a minute)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: namespaces, nsids, CAP_NET_BROADCAST")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	counts := envInts(t, "NSBENCH_DESTROY_COUNTS", []int{1, 10, 100})
	rounds := envInts(t, "NSBENCH_DESTROY_ROUNDS", []int{5})[0]
	conns := envInts(t, "NSBENCH_DESTROY_CONNS", []int{20000})[0]

	out := os.Stdout
	uname := unix.Utsname{}
	unix.Uname(&uname)
	fmt.Fprintf(out, "# %s %s %s, %d CPUs\n", time.Now().UTC().Format(time.RFC3339),
		unix.ByteSliceToString(uname.Release[:]), runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(out, "# host at start: load average %s; %d TCP sockets host-wide with TIME_WAIT; nsids already in the host namespace: %d\n",
		loadavg(), hostTCP(), countNsids())
	fmt.Fprintf(out, "# per round and design: %d loopback connections opened and closed with a reset, 2 notifications each\n\n", conns)

	for _, n := range counts {
		if n < 1 || conns < n {
			t.Fatalf("bad count %d for %d connections", n, conns)
		}
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			runDestroyCount(t, out, n, conns/n, rounds)
		})
		// Deleted namespaces are torn down by a kworker afterwards: let it
		// finish before the next count measures kworkers.
		time.Sleep(2 * time.Second)
	}
}

// destroyGroups is every SKNLGRP_INET*_DESTROY group, as the daemon binds
// them for its defaults (TCP and UDP, IPv4 and IPv6).
const destroyGroups = 1<<(snapshot.GroupTCP4Destroy-1) | 1<<(snapshot.GroupUDP4Destroy-1) |
	1<<(snapshot.GroupTCP6Destroy-1) | 1<<(snapshot.GroupUDP6Destroy-1)

const (
	netlinkListenAllNsid = 8 // NETLINK_LISTEN_ALL_NSID
	rtmNewNsid           = 88
	rtmGetNsid           = 90
	netnsaNsid           = 1
	netnsaFD             = 3
	chunk                = 10 // connections a namespace opens per turn
)

// dNS is one namespace of the measurement, with a thread inside it that
// opens the load's connections and design A's subscription.
type dNS struct {
	name  string
	path  string
	nsid  int32
	cmds  chan func()
	done  chan struct{}
	lfd   int
	laddr unix.SockaddrInet4
	tok   chan struct{}
}

// design is one round's result for one design.
type design struct {
	setupNS  []time.Duration // per namespace: A's socket; B's nsid lookup
	setupAll time.Duration   // B's one socket
	idle     recvResult
	idleWall time.Duration
	// background is the host's busy CPUs during the idle wait: other
	// users' load (ours then is a receiver blocked in epoll_wait).
	background float64
	live       recvResult
	kworker    int64 // ns of kworker CPU during the live load
	hostBusy   float64
	ours       float64 // our process's CPU during the load, in cores
	loadWall   time.Duration
	expected   int64
	rmem       int64 // paused: bytes queued in the receive buffers
}

func runDestroyCount(t *testing.T, out *os.File, n, k, rounds int) {
	nss := make([]*dNS, n)
	for i := range nss {
		nss[i] = newDNS(t)
	}
	// nsids: assigned once (they cannot be taken back; they go with the
	// namespace), timed per namespace.
	rt, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rt)
	if err := unix.Bind(rt, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	var assign []time.Duration
	for _, ns := range nss {
		t0 := time.Now()
		id, err := assignNsid(rt, ns.path)
		assign = append(assign, time.Since(t0))
		if err != nil {
			t.Fatalf("nsid for %s: %v", ns.name, err)
		}
		ns.nsid = id
	}

	expected := int64(2 * k * n)
	var res [2][]design // [A, B] per round
	var paused [2]design
	for r := range rounds {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, d := range order {
			res[d] = append(res[d], runDesign(t, d, nss, rt, k, expected, false))
		}
	}
	for _, d := range []int{0, 1} {
		paused[d] = runDesign(t, d, nss, rt, k, expected, true)
	}
	report(out, n, k, rounds, expected, assign, res, paused)
}

// runDesign opens design d's sockets (0: A, 1: B), measures the idle
// receiver, then the load, and closes the sockets.
func runDesign(t *testing.T, d int, nss []*dNS, rt, k int, expected int64, pause bool) design {
	t.Helper()
	var out design
	out.expected = expected
	rc := &receiver{b: d == 1, perNS: make([]int64, len(nss)), buf: make([]byte, 64<<10), oob: make([]byte, 64)}
	if d == 0 {
		rc.fds = make([]int, len(nss))
		for i, ns := range nss {
			var fd int
			var err error
			var dt time.Duration
			ns.do(func() {
				t0 := time.Now()
				fd, err = openSub(false)
				dt = time.Since(t0)
			})
			if err != nil {
				t.Fatalf("A: subscription in %s: %v", ns.name, err)
			}
			rc.fds[i] = fd
			out.setupNS = append(out.setupNS, dt)
		}
	} else {
		t0 := time.Now()
		fd, err := openSub(true)
		out.setupAll = time.Since(t0)
		if err != nil {
			t.Fatalf("B: %v", err)
		}
		rc.fds = []int{fd}
		// What a daemon restarting with the nsids in place does for each
		// namespace: look its nsid up (the assignment was timed once).
		rc.nsOf = map[int32]int{}
		for i, ns := range nss {
			t0 := time.Now()
			id, err := getNsid(rt, ns.path)
			out.setupNS = append(out.setupNS, time.Since(t0))
			if err != nil || id != ns.nsid {
				t.Fatalf("B: nsid of %s: %d, %v (assigned %d)", ns.name, id, err, ns.nsid)
			}
			rc.nsOf[id] = i
		}
	}
	defer func() {
		for _, fd := range rc.fds {
			unix.Close(fd)
		}
	}()
	if err := rc.epoll(); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rc.epfd)

	if !pause {
		b0, tot0 := hostStat()
		t0 := time.Now()
		out.idle = rc.run(0, nil, 0, 500*time.Millisecond)
		out.idleWall = time.Since(t0)
		if b1, tot1 := hostStat(); tot1 > tot0 {
			out.background = float64(b1-b0) / float64(tot1-tot0) * float64(runtime.NumCPU())
		}
	}

	// The load, from every namespace in turn, chunk connections a turn.
	loadDone := make(chan struct{})
	var recvc chan recvResult
	if !pause {
		recvc = make(chan recvResult, 1)
		started := make(chan struct{})
		go func() { recvc <- rc.runStarted(expected, loadDone, time.Second, 0, started) }()
		<-started
	}
	kw0, p0 := kworkerCPU(), processCPUNow()
	busy0, tot0 := hostStat()
	t0 := time.Now()
	if err := load(nss, k); err != nil {
		t.Fatalf("load: %v", err)
	}
	out.loadWall = time.Since(t0)
	busy1, tot1 := hostStat()
	p1 := processCPUNow()
	close(loadDone)
	if !pause {
		out.live = <-recvc
		out.kworker = kworkerCPU() - kw0
	} else {
		// Let the kworkers deliver what is queued, then count the bytes
		// the receive buffers hold, then drain.
		var last int64 = -1
		for range 50 {
			time.Sleep(100 * time.Millisecond)
			m := int64(0)
			for _, fd := range rc.fds {
				m += rmemAlloc(fd)
			}
			if m == last {
				break
			}
			last = m
		}
		out.rmem = last
		out.live = rc.run(expected, loadDone, 300*time.Millisecond, 0)
	}
	if tot1 > tot0 {
		ncpu := float64(runtime.NumCPU())
		out.hostBusy = float64(busy1-busy0) / float64(tot1-tot0) * ncpu
		out.ours = float64(p1-p0) / float64(out.loadWall.Nanoseconds())
	}
	if out.live.err != nil {
		t.Fatalf("%s: %v", "AB"[d:d+1], out.live.err)
	}
	if out.live.ours == 0 {
		t.Fatalf("%s received no notification of our namespaces (%d foreign): not a result", "AB"[d:d+1], out.live.foreign)
	}
	if !pause && out.live.ours != expected {
		t.Logf("%s: %d notifications of our namespaces, expected %d (%d ENOBUFS)", "AB"[d:d+1], out.live.ours, expected, out.live.enobufs)
	}
	if !pause {
		for i, c := range rc.perNS {
			if c != int64(2*k) {
				t.Logf("%s: namespace %d got %d notifications, want %d", "AB"[d:d+1], i, c, 2*k)
			}
		}
	}
	return out
}

// openSub opens a destroy subscription as diag.OpenDestroy does
// (non-blocking, diag.DefaultDestroyBuffer forced, every group, connected
// to the kernel), in the calling thread's namespace; with allNsid also
// listening to the namespaces that have an nsid here.
func openSub(allNsid bool) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, err
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, diag.DefaultDestroyBuffer); err != nil {
		return fail("SO_RCVBUFFORCE", err)
	}
	if allNsid {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, netlinkListenAllNsid, 1); err != nil {
			return fail("NETLINK_LISTEN_ALL_NSID", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: destroyGroups}); err != nil {
		return fail("bind", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail("connect", err)
	}
	return fd, nil
}

// newDNS creates a namespace with loopback up, and a thread inside it
// holding a TCP listener on 127.0.0.1; all removed when t ends.
func newDNS(t *testing.T) *dNS {
	t.Helper()
	ns := &dNS{
		name: fmt.Sprintf("connlogd-nsbench-d%d-%d", os.Getpid(), nsCounter.Add(1)),
		cmds: make(chan func()),
		done: make(chan struct{}),
		tok:  make(chan struct{}, 1),
	}
	ns.path = "/run/netns/" + ns.name
	if out, err := exec.Command("ip", "netns", "add", ns.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", ns.name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up in %s: %v: %s", ns.name, err, out)
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with the goroutine.
		runtime.LockOSThread()
		defer close(ns.done)
		f, err := os.Open(ns.path)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.name, err)
			return
		}
		ns.lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(ns.lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		}
		if err == nil {
			err = unix.Listen(ns.lfd, 128)
		}
		var sa unix.Sockaddr
		if err == nil {
			sa, err = unix.Getsockname(ns.lfd)
		}
		if err != nil {
			errc <- fmt.Errorf("listener in %s: %w", ns.name, err)
			return
		}
		ns.laddr = *sa.(*unix.SockaddrInet4)
		errc <- nil
		for f := range ns.cmds {
			f()
		}
		unix.Close(ns.lfd)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Registered after the deletion: runs before it.
	t.Cleanup(func() {
		close(ns.cmds)
		<-ns.done
	})
	return ns
}

// do runs f on the namespace's thread.
func (ns *dNS) do(f func()) {
	done := make(chan struct{})
	ns.cmds <- func() { f(); close(done) }
	<-done
}

// load opens and closes k loopback connections in each namespace, the
// namespaces taking turns of chunk connections each (one token passed
// round the ring), so that notifications of all of them interleave. Each
// connection is closed with a reset, client first: 2 notifications, no
// TIME_WAIT left in the host-wide hash.
func load(nss []*dNS, k int) error {
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i, ns := range nss {
		next := nss[(i+1)%len(nss)]
		wg.Add(1)
		ns.cmds <- func() {
			defer wg.Done()
			for left := k; left > 0; {
				<-ns.tok
				m := min(chunk, left)
				for range m {
					if err := connectClose(ns); err != nil {
						firstErr.CompareAndSwap(nil, err)
					}
				}
				left -= m
				next.tok <- struct{}{}
			}
		}
	}
	nss[0].tok <- struct{}{}
	wg.Wait()
	for _, ns := range nss {
		select {
		case <-ns.tok:
		default:
		}
	}
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

var lingerReset = unix.Linger{Onoff: 1, Linger: 0}

func connectClose(ns *dNS) error {
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(c, &ns.laddr); err != nil {
		unix.Close(c)
		return fmt.Errorf("connect in %s: %w", ns.name, err)
	}
	a, _, err := unix.Accept4(ns.lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		unix.Close(c)
		return fmt.Errorf("accept in %s: %w", ns.name, err)
	}
	err = unix.SetsockoptLinger(c, unix.SOL_SOCKET, unix.SO_LINGER, &lingerReset)
	unix.Close(c) // a reset: the client is gone at once
	unix.Close(a) // reset already: gone at once too
	return err
}

// receiver drains one design's sockets as the daemon drains its
// subscription: wait for readability, then non-blocking reads until
// EAGAIN, each message parsed into a table.
type receiver struct {
	b     bool          // design B: one socket, nsid from the control message
	fds   []int         // A: one per namespace, in namespace order
	nsOf  map[int32]int // B: nsid → namespace index
	idxOf []int         // fd → namespace index (A)
	epfd  int
	buf   []byte
	oob   []byte
	tab   snapshot.Table
	perNS []int64

	from    unix.RawSockaddrNetlink
	fromLen uint32
	iov     unix.Iovec
	msg     unix.Msghdr
	res     recvResult
}

type recvResult struct {
	cpu       int64 // ns of the receiving thread (RUSAGE_THREAD)
	wall      time.Duration
	waits     int64 // epoll_wait calls
	wakeups   int64 // epoll_wait calls that returned a ready socket
	ready     int64 // ready sockets returned
	recvs     int64 // recvfrom/recvmsg calls, EAGAIN included
	ours      int64 // notifications of our namespaces
	foreign   int64 // of other namespaces (B: no nsid, or not ours)
	enobufs   int64
	malformed int64
	err       error
}

func (r *receiver) epoll() error {
	var err error
	r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	r.idxOf = make([]int, slices.Max(r.fds)+1)
	for i, fd := range r.fds {
		r.idxOf[fd] = i
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return err
		}
	}
	return nil
}

// run receives on a thread of its own until it has want notifications of
// our namespaces, or, once loadDone is closed, nothing came for quiet, or
// for idle when idle is set.
func (r *receiver) run(want int64, loadDone <-chan struct{}, quiet, idle time.Duration) recvResult {
	c := make(chan recvResult, 1)
	go func() { c <- r.runStarted(want, loadDone, quiet, idle, nil) }()
	return <-c
}

func (r *receiver) runStarted(want int64, loadDone <-chan struct{}, quiet, idle time.Duration, started chan<- struct{}) recvResult {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r.res = recvResult{}
	for i := range r.perNS {
		r.perNS[i] = 0
	}
	events := make([]unix.EpollEvent, len(r.fds))
	c0 := threadCPU()
	t0 := time.Now()
	if started != nil {
		close(started)
	}
	lastMsg := t0
	for {
		timeout := 50
		if idle > 0 {
			timeout = int((idle - time.Since(t0)) / time.Millisecond)
			if timeout <= 0 {
				break
			}
		}
		n, err := unix.EpollWait(r.epfd, events, timeout)
		r.res.waits++
		if err != nil && err != unix.EINTR {
			r.res.err = err
			break
		}
		if n > 0 {
			r.res.wakeups++
			r.res.ready += int64(n)
			before := r.res.ours + r.res.foreign
			for _, ev := range events[:n] {
				if err := r.drain(int(ev.Fd)); err != nil {
					r.res.err = err
					break
				}
			}
			if r.res.ours+r.res.foreign != before {
				lastMsg = time.Now()
			}
		}
		if r.res.err != nil || (want > 0 && r.res.ours >= want) {
			break
		}
		if idle == 0 && loadDone != nil {
			select {
			case <-loadDone:
				if time.Since(lastMsg) > quiet {
					return r.finish(c0, t0)
				}
			default:
			}
		}
	}
	return r.finish(c0, t0)
}

func (r *receiver) finish(c0 int64, t0 time.Time) recvResult {
	r.res.cpu = threadCPU() - c0
	r.res.wall = time.Since(t0)
	return r.res
}

// drain reads fd until EAGAIN.
func (r *receiver) drain(fd int) error {
	defer r.tab.Reset()
	for {
		var n uintptr
		var errno unix.Errno
		r.fromLen = unix.SizeofSockaddrNetlink
		if r.b {
			r.iov.Base = &r.buf[0]
			r.iov.SetLen(len(r.buf))
			r.msg = unix.Msghdr{
				Name:    (*byte)(unsafe.Pointer(&r.from)),
				Namelen: unix.SizeofSockaddrNetlink,
				Iov:     &r.iov,
				Iovlen:  1,
				Control: &r.oob[0],
			}
			r.msg.SetControllen(len(r.oob))
			n, _, errno = unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msg)),
				unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		} else {
			n, _, errno = unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd),
				uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)),
				unix.MSG_DONTWAIT|unix.MSG_TRUNC,
				uintptr(unsafe.Pointer(&r.from)), uintptr(unsafe.Pointer(&r.fromLen)))
		}
		r.res.recvs++
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return nil
		case unix.ENOBUFS:
			r.res.enobufs++
			continue
		default:
			return fmt.Errorf("receive: %w", errno)
		}
		if int(n) > len(r.buf) || r.from.Pid != 0 {
			r.res.malformed++
			continue
		}
		proto := snapshot.ProtoTCP
		switch r.from.Groups {
		case 1 << (snapshot.GroupTCP4Destroy - 1), 1 << (snapshot.GroupTCP6Destroy - 1):
		case 1 << (snapshot.GroupUDP4Destroy - 1), 1 << (snapshot.GroupUDP6Destroy - 1):
			proto = snapshot.ProtoUDP
		default:
			r.res.malformed++
			continue
		}
		idx := r.idxOf[fd]
		if r.b {
			id, ok := cmsgNsid(r.oob[:r.msg.Controllen])
			if ok {
				idx, ok = r.nsOf[id]
			}
			if !ok {
				r.res.foreign++
				continue
			}
		}
		it := snapshot.NewMsgIter(r.buf[:n])
		for {
			h, payload, ok := it.Next()
			if !ok {
				break
			}
			s := r.tab.Append()
			if h.Type != snapshot.SockDiagByFam || snapshot.ParseDiagMsg(payload, proto, s) != nil {
				r.tab.DropLast()
				r.res.malformed++
				continue
			}
			r.res.ours++
			r.perNS[idx]++
		}
	}
}

// cmsgNsid returns the nsid of a NETLINK_LISTEN_ALL_NSID control message:
// absent for a message of the socket's own namespace.
func cmsgNsid(b []byte) (int32, bool) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofCmsghdr {
		l := int(ne.Uint64(b[0:8]))
		if l < unix.SizeofCmsghdr || l > len(b) {
			return 0, false
		}
		level, typ := int32(ne.Uint32(b[8:12])), int32(ne.Uint32(b[12:16]))
		if level == unix.SOL_NETLINK && typ == netlinkListenAllNsid && l >= unix.CmsgLen(4) {
			return int32(ne.Uint32(b[unix.SizeofCmsghdr:])), true
		}
		adv := unix.CmsgSpace(l - unix.SizeofCmsghdr)
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return 0, false
}

// assignNsid gives the namespace at path an nsid in ours (RTM_NEWNSID,
// the kernel choosing it, as `ip netns set NAME auto`) and returns it.
func assignNsid(rt int, path string) (int32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := nsidRequest(rt, rtmNewNsid, int(f.Fd()), -1); err != nil {
		return 0, fmt.Errorf("RTM_NEWNSID: %w", err)
	}
	return nsidRequest(rt, rtmGetNsid, int(f.Fd()), 0)
}

// getNsid returns the nsid the namespace at path has in ours.
func getNsid(rt int, path string) (int32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return nsidRequest(rt, rtmGetNsid, int(f.Fd()), 0)
}

var nsidSeq atomic.Uint32

// nsidRequest sends RTM_NEWNSID (with nsid, acknowledged) or RTM_GETNSID
// for the namespace of nsfd and returns the nsid a RTM_GETNSID reply
// carries.
func nsidRequest(rt int, typ uint16, nsfd int, nsid int32) (int32, error) {
	ne := binary.NativeEndian
	flags := uint16(unix.NLM_F_REQUEST)
	if typ == rtmNewNsid {
		flags |= unix.NLM_F_ACK
	}
	seq := nsidSeq.Add(1)
	b := make([]byte, 0, 64)
	b = ne.AppendUint32(b, 0) // length, below
	b = ne.AppendUint16(b, typ)
	b = ne.AppendUint16(b, flags)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	b = append(b, unix.AF_UNSPEC, 0, 0, 0) // struct rtgenmsg, padded
	b = ne.AppendUint16(b, 8)
	b = ne.AppendUint16(b, netnsaFD)
	b = ne.AppendUint32(b, uint32(nsfd))
	if typ == rtmNewNsid {
		b = ne.AppendUint16(b, 8)
		b = ne.AppendUint16(b, netnsaNsid)
		b = ne.AppendUint32(b, uint32(nsid))
	}
	ne.PutUint32(b[0:4], uint32(len(b)))
	if err := unix.Sendto(rt, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(rt, buf, 0)
		if err != nil {
			return 0, err
		}
		it := snapshot.NewMsgIter(buf[:n])
		for {
			h, payload, ok := it.Next()
			if !ok {
				break
			}
			if h.Seq != seq {
				continue
			}
			switch h.Type {
			case unix.NLMSG_ERROR:
				code, err := snapshot.ParseErrno(payload)
				if err != nil {
					return 0, err
				}
				if code != 0 {
					return 0, unix.Errno(code)
				}
				return 0, nil // the ACK of RTM_NEWNSID
			case rtmNewNsid:
				for a := payload[min(4, len(payload)):]; len(a) >= 4; {
					l := int(ne.Uint16(a[0:2]))
					if l < 4 || l > len(a) {
						break
					}
					if ne.Uint16(a[2:4])&0x3fff == netnsaNsid && l >= 8 {
						id := int32(ne.Uint32(a[4:8]))
						if id < 0 {
							return id, errors.New("no nsid assigned")
						}
						return id, nil
					}
					a = a[min((l+3)&^3, len(a)):]
				}
				return 0, errors.New("reply without NETNSA_NSID")
			}
		}
	}
}

// countNsids returns how many nsids the host namespace holds.
func countNsids() int {
	out, err := exec.Command("ip", "netns", "list-id").Output()
	if err != nil {
		return -1
	}
	return strings.Count(string(out), "nsid ")
}

// threadCPU returns the CPU time of the calling thread. Unlike
// getrusage(RUSAGE_THREAD), whose sum stops at the thread's last tick or
// switch (up to a few ms stale), CLOCK_THREAD_CPUTIME_ID includes the
// running slice.
func threadCPU() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// processCPUNow is processCPU to the nanosecond.
func processCPUNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// rmemAlloc returns the bytes queued on a socket (SO_MEMINFO).
func rmemAlloc(fd int) int64 {
	var mi [unix.SK_MEMINFO_VARS]uint32
	l := uint32(unsafe.Sizeof(mi))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return -1
	}
	return int64(mi[unix.SK_MEMINFO_RMEM_ALLOC])
}

// kworkerCPU returns the CPU time of every kworker thread (schedstat,
// ns): the sock_diag_events workqueue builds and multicasts the
// notifications there. Other work of the host counts too.
func kworkerCPU() int64 {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total int64
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || !strings.HasPrefix(string(comm), "kworker/") {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(st)); len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			total += v
		}
	}
	return total
}

// hostStat returns busy and total ticks of all CPUs (/proc/stat).
func hostStat() (busy, total int) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	// user nice system idle iowait irq softirq steal (guest time is in
	// user already)
	for i, f := range f[1:min(9, len(f))] {
		v, _ := strconv.Atoi(f)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func envInts(t *testing.T, name string, def []int) []int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	var out []int
	for _, f := range strings.Fields(s) {
		v, err := strconv.Atoi(f)
		if err != nil || v < 1 {
			t.Fatalf("%s: %q is not a positive number", name, f)
		}
		out = append(out, v)
	}
	return out
}

// report prints one count's results: medians over the rounds [min–max].
func report(out *os.File, n, k, rounds int, expected int64, assign []time.Duration, res [2][]design, paused [2]design) {
	fmt.Fprintf(out, "N=%d namespaces, %d connections each per round (%d notifications expected), %d rounds; load average now %s\n",
		n, k, expected, rounds, loadavg())
	fmt.Fprintf(out, "%-22s %26s %26s %20s\n", "median [min–max]", "A: socket per namespace", "B: one socket, all nsid", "B ÷ A (per round)")
	row := func(name string, f func(d design) float64, prec int) {
		var v [2][]float64
		var ratio []float64
		for i := range res[0] {
			a, b := f(res[0][i]), f(res[1][i])
			v[0] = append(v[0], a)
			v[1] = append(v[1], b)
			if a != 0 {
				ratio = append(ratio, b/a)
			}
		}
		r := "-"
		if len(ratio) == len(v[0]) {
			r = medRange(ratio, 2)
		}
		fmt.Fprintf(out, "%-22s %26s %26s %20s\n", name, medRange(v[0], prec), medRange(v[1], prec), r)
	}
	per1000 := func(x int64, d design) float64 {
		if d.live.ours == 0 {
			return 0
		}
		return float64(x) * 1000 / float64(d.live.ours)
	}
	row("recv CPU µs/1000", func(d design) float64 { return per1000(d.live.cpu, d) / 1e3 }, 0)
	row("recv calls/1000", func(d design) float64 { return per1000(d.live.recvs, d) }, 0)
	row("wakeups/1000", func(d design) float64 { return per1000(d.live.wakeups, d) }, 0)
	row("ready sockets/1000", func(d design) float64 { return per1000(d.live.ready, d) }, 0)
	row("kworker CPU µs/1000", func(d design) float64 { return per1000(d.kworker, d) / 1e3 }, 0)
	row("received (ours)", func(d design) float64 { return float64(d.live.ours) }, 0)
	row("foreign received", func(d design) float64 { return float64(d.live.foreign) }, 0)
	row("lost (expected−ours)", func(d design) float64 { return float64(d.expected - d.live.ours) }, 0)
	row("ENOBUFS", func(d design) float64 { return float64(d.live.enobufs) }, 0)
	row("load wall ms", func(d design) float64 { return float64(d.loadWall.Microseconds()) / 1e3 }, 0)
	row("host busy CPUs, idle", func(d design) float64 { return d.background }, 2)
	row("host busy CPUs, load", func(d design) float64 { return d.hostBusy }, 2)
	row("of which ours", func(d design) float64 { return d.ours }, 2)
	row("idle CPU µs/s", func(d design) float64 {
		return float64(d.idle.cpu) / 1e3 / d.idleWall.Seconds()
	}, 1)
	row("idle foreign msgs/s", func(d design) float64 {
		return float64(d.idle.foreign+d.idle.ours) / d.idleWall.Seconds()
	}, 0)
	var setupA, setupB, setupOnce []float64
	for i := range res[0] {
		for _, s := range res[0][i].setupNS {
			setupA = append(setupA, float64(s.Nanoseconds())/1e3)
		}
		for _, s := range res[1][i].setupNS {
			setupB = append(setupB, float64(s.Nanoseconds())/1e3)
		}
		setupOnce = append(setupOnce, float64(res[1][i].setupAll.Nanoseconds())/1e3)
	}
	var as []float64
	for _, s := range assign {
		as = append(as, float64(s.Nanoseconds())/1e3)
	}
	fmt.Fprintf(out, "setup per namespace: A open a subscription in it %s µs; B nsid lookup (RTM_GETNSID) %s µs, assignment (RTM_NEWNSID + lookup, once) %s µs; B's one socket %s µs\n",
		medRange(setupA, 1), medRange(setupB, 1), medRange(as, 1), medRange(setupOnce, 1))
	fmt.Fprintf(out, "fds: A %d subscription sockets, B 1 (both + 1 epoll)\n", n)
	for d, p := range paused {
		perNote := "-"
		if p.live.ours > 0 {
			perNote = fmt.Sprintf("%.0f", float64(p.rmem)/float64(p.live.ours+p.live.foreign))
		}
		fmt.Fprintf(out, "paused %s: %d of %d received, lost %d (%d ENOBUFS), %d foreign; %d bytes queued (%s per notification); drain %.0f µs CPU/1000, %.0f recv calls/1000\n",
			"AB"[d:d+1], p.live.ours, p.expected, p.expected-p.live.ours, p.live.enobufs, p.live.foreign, p.rmem, perNote,
			float64(p.live.cpu)/float64(max(p.live.ours, 1)), float64(p.live.recvs)*1000/float64(max(p.live.ours, 1)))
	}
	fmt.Fprintln(out)
}

func medRange(v []float64, prec int) string {
	if len(v) == 0 {
		return "-"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	var m float64
	if len(s)%2 == 1 {
		m = s[len(s)/2]
	} else {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, m, prec, s[0], prec, s[len(s)-1])
}
