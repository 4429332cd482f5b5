//go:build linux

package filter

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/snapshot"
)

var (
	allProtos = []snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP}
	allFams   = []snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}
)

func openConn(t *testing.T, ns *netnstest.NS) *diag.Conn {
	t.Helper()
	var c *diag.Conn
	if err := ns.Do(func() (err error) { c, err = diag.Open(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sockName is how the tests name a dumped socket.
func sockName(p snapshot.Proto, src, dst netip.AddrPort) string {
	return fmt.Sprintf("%s %s -> %s", p, src, dst)
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	panic(fmt.Sprintf("address of type %T", a))
}

// closeAll closes what the test opened, as cleanup.
func closeAll(t *testing.T, cs ...interface{ Close() error }) {
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
}

// TestKernelFilter sends each filter's programs with real dumps in a
// network namespace holding sockets on several addresses and ports, and
// checks that the kernel accepts them and returns exactly the sockets
// Match accepts, and that those are the ones expected.
func TestKernelFilter(t *testing.T) {
	ns := netnstest.New(t)
	ns.Run(t, "ip", "addr", "add", "10.1.0.1/32", "dev", "lo")
	ns.Run(t, "ip", "addr", "add", "10.2.0.1/32", "dev", "lo")
	ns.Run(t, "ip", "-6", "addr", "add", "fd00::1/128", "dev", "lo", "nodad")
	conn := openConn(t, ns)

	socks := map[string]string{} // test name -> dump name
	err := ns.Do(func() error {
		listen := func(name, network, addr string) (net.Listener, error) {
			l, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			closeAll(t, l)
			socks[name] = sockName(snapshot.ProtoTCP, addrPortOf(l.Addr()), netip.AddrPortFrom(zeroOf(addrPortOf(l.Addr()).Addr()), 0))
			return l, nil
		}
		// connect dials from local to a listener and names both ends.
		connect := func(name string, l net.Listener, local, remote string) error {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))}
			c, err := d.Dial("tcp", remote)
			if err != nil {
				return err
			}
			s, err := l.Accept()
			if err != nil {
				c.Close()
				return err
			}
			closeAll(t, c, s)
			socks[name+" client"] = sockName(snapshot.ProtoTCP, addrPortOf(c.LocalAddr()), addrPortOf(c.RemoteAddr()))
			socks[name+" server"] = sockName(snapshot.ProtoTCP, addrPortOf(s.LocalAddr()), addrPortOf(s.RemoteAddr()))
			return nil
		}
		if _, err := listen("lo4:8000", "tcp4", "127.0.0.1:8000"); err != nil {
			return err
		}
		if _, err := listen("a:8050", "tcp4", "10.1.0.1:8050"); err != nil {
			return err
		}
		b9000, err := listen("b:9000", "tcp4", "10.2.0.1:9000")
		if err != nil {
			return err
		}
		if _, err := listen("lo6:8000", "tcp6", "[::1]:8000"); err != nil {
			return err
		}
		if _, err := listen("fd:9000", "tcp6", "[fd00::1]:9000"); err != nil {
			return err
		}
		// A dual-stack listener: its IPv4 connections are IPv6 sockets
		// with IPv4-mapped addresses.
		any7000, err := listen("any6:7000", "tcp", "[::]:7000")
		if err != nil {
			return err
		}
		if err := connect("a->b:9000", b9000, "10.1.0.1:0", "10.2.0.1:9000"); err != nil {
			return err
		}
		if err := connect("a->b:7000", any7000, "10.1.0.1:0", "10.2.0.1:7000"); err != nil {
			return err
		}
		for name, addr := range map[string]string{"udp a:5353": "10.1.0.1:5353", "udp lo6:5353": "[::1]:5353"} {
			u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
			if err != nil {
				return err
			}
			closeAll(t, u)
			local := addrPortOf(u.LocalAddr())
			socks[name] = sockName(snapshot.ProtoUDP, local, netip.AddrPortFrom(zeroOf(local.Addr()), 0))
		}
		u, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.1.0.1:0")), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.2.0.1:53")))
		if err != nil {
			return err
		}
		closeAll(t, u)
		socks["udp a->b:53"] = sockName(snapshot.ProtoUDP, addrPortOf(u.LocalAddr()), addrPortOf(u.RemoteAddr()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(socks["a->b:7000 server"], "::ffff:10.2.0.1") {
		t.Fatalf("the dual-stack listener's connection is %q, not an IPv4-mapped IPv6 socket", socks["a->b:7000 server"])
	}

	all := slices.Sorted(maps.Keys(socks))
	dumpNames := slices.Sorted(maps.Values(socks))
	tests := []struct {
		name    string
		filters string
		want    []string // test names of the sockets to come back
	}{
		{"local port range", "  include:\n    - local_ports: [8000-8100]\n",
			[]string{"lo4:8000", "a:8050", "lo6:8000"}},
		{"port either side", "  include:\n    - ports: [9000]\n",
			[]string{"b:9000", "fd:9000", "a->b:9000 client", "a->b:9000 server"}},
		{"remote port", "  include:\n    - remote_ports: [53, 7000]\n",
			[]string{"udp a->b:53", "a->b:7000 client"}},
		{"remote IPv4 prefix", "  include:\n    - remote_cidrs: [10.2.0.0/16]\n",
			[]string{"a->b:9000 client", "a->b:7000 client", "udp a->b:53"}},
		{"local IPv4 address matches IPv4-mapped", "  include:\n    - local_cidrs: [10.2.0.1]\n",
			[]string{"b:9000", "a->b:9000 server", "a->b:7000 server"}},
		{"IPv6 prefix either side", "  include:\n    - cidrs: [\"fd00::/8\"]\n",
			[]string{"fd:9000"}},
		{"exclude loopback", "  exclude:\n    - loopback: true\n",
			without(all, "lo4:8000", "lo6:8000", "udp lo6:5353")},
		{"include not loopback, exclude a conjunction", "  include:\n    - loopback: false\n  exclude:\n    - local_cidrs: [10.1.0.0/16]\n      local_ports: [8050, 5353]\n",
			without(all, "lo4:8000", "lo6:8000", "udp lo6:5353", "a:8050", "udp a:5353")},
		{"exclude every IPv6 socket", "  exclude:\n    - local_cidrs: [\"::/0\"]\n",
			[]string{"lo4:8000", "a:8050", "b:9000", "a->b:9000 client", "a->b:9000 server", "a->b:7000 client", "udp a:5353", "udp a->b:53"}},
		// The kernel cannot see owners: the port part alone runs there,
		// widened, and MatchOwner decides later.
		{"process in an include rule", "  include:\n    - process: [nobody-here]\n      local_ports: [5353]\n",
			[]string{"udp a:5353", "udp lo6:5353"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustNew(t, parse(t, tt.filters))
			var want []string
			for _, n := range tt.want {
				if socks[n] == "" {
					t.Fatalf("no socket named %q", n)
				}
				want = append(want, socks[n])
			}
			slices.Sort(want)

			// Kernel-side: every request carries its family's program.
			// One request per family: each gets its family's program.
			var reqs []diag.Request
			for _, r := range diag.Requests(allProtos, allFams, false) {
				reqs = append(reqs, r.Split()...)
			}
			programs := 0
			for i := range reqs {
				if bc, ok := f.Bytecode(reqs[i].Family); ok {
					reqs[i].Bytecode = bc
					programs++
				}
			}
			if programs == 0 {
				t.Fatal("no kernel program to test")
			}
			var tab snapshot.Table
			if err := conn.Dump(&tab, reqs); err != nil {
				t.Fatalf("dump with the programs: %v", err) // EINVAL: the kernel refused one
			}
			kernel := names(&tab, nil)

			// Userspace: the whole table, then Match.
			if err := conn.Dump(&tab, diag.Requests(allProtos, allFams, false)); err != nil {
				t.Fatal(err)
			}
			if got := names(&tab, nil); !slices.Equal(got, dumpNames) {
				t.Fatalf("unfiltered dump:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(dumpNames, "\n"))
			}
			user := names(&tab, f.Match)

			if !slices.Equal(kernel, want) {
				t.Errorf("kernel-filtered dump:\n  %s\nwant:\n  %s", strings.Join(kernel, "\n  "), strings.Join(want, "\n  "))
			}
			if !slices.Equal(user, want) {
				t.Errorf("Match on the full dump:\n  %s\nwant:\n  %s", strings.Join(user, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

func zeroOf(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func without(all []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
}

// names lists the sockets of t that keep accepts (all when nil), sorted.
func names(t *snapshot.Table, keep func(*snapshot.Socket) bool) []string {
	var out []string
	for i := range t.Sockets {
		s := &t.Sockets[i]
		if keep == nil || keep(s) {
			out = append(out, sockName(s.Proto, s.Src, s.Dst))
		}
	}
	slices.Sort(out)
	return out
}

// TestKernelRefusesInvalidPrograms: the kernel audits programs and refuses
// a bad one with EINVAL, the verdict the model gives (TestAuditModel).
// Dumps with a valid program succeed, so the other tests' programs were
// accepted, not ignored.
func TestKernelRefusesInvalidPrograms(t *testing.T) {
	ns := netnstest.New(t)
	conn := openConn(t, ns)
	var tab snapshot.Table
	for _, tt := range invalidPrograms {
		for _, fam := range allFams {
			r := diag.Request{Family: fam, Proto: snapshot.ProtoTCP, States: snapshot.AllStates, Bytecode: tt.code}
			err := conn.Dump(&tab, []diag.Request{r})
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("%s, %v: dump error %v, want EINVAL", tt.name, fam, err)
			}
		}
	}
	f := mustNew(t, parse(t, "  include:\n    - local_ports: [22]\n"))
	bc, _ := f.Bytecode(snapshot.FamilyIPv4)
	if err := conn.Dump(&tab, []diag.Request{{Family: snapshot.FamilyIPv4, Proto: snapshot.ProtoTCP, States: snapshot.AllStates, Bytecode: bc}}); err != nil {
		t.Errorf("valid program: %v", err)
	}
}

// TestKernelFilterCutsDump shows that the program shrinks what the kernel
// sends: 200 UDP sockets, a filter keeping 10, and the netlink messages
// and bytes counted on a raw socket, with and without the program.
func TestKernelFilterCutsDump(t *testing.T) {
	const n, kept, base = 200, 10, 20000
	ns := netnstest.New(t)
	err := ns.Do(func() error {
		for i := range n {
			u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: base + i})
			if err != nil {
				return err
			}
			closeAll(t, u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f := mustNew(t, parse(t, fmt.Sprintf("  include:\n    - local_ports: [\"%d-%d\"]\n", base, base+kept-1)))
	bc, ok := f.Bytecode(snapshot.FamilyIPv4)
	if !ok {
		t.Fatal("no program")
	}

	fullMsgs, fullBytes := rawDump(t, ns, nil)
	msgs, bytes := rawDump(t, ns, bc)
	t.Logf("without the program: %d sockets in %d bytes; with it: %d sockets in %d bytes", fullMsgs, fullBytes, msgs, bytes)
	if fullMsgs != n || msgs != kept {
		t.Errorf("sockets received: %d without the program, %d with it; want %d and %d", fullMsgs, msgs, n, kept)
	}
	// A twentieth of the sockets, plus the end-of-dump message.
	if bytes*10 > fullBytes {
		t.Errorf("bytes received: %d with the program, %d without; want at most a tenth", bytes, fullBytes)
	}

	// The same through diag.Conn, which the daemon uses.
	conn := openConn(t, ns)
	var tab snapshot.Table
	req := diag.Request{Family: snapshot.FamilyIPv4, Proto: snapshot.ProtoUDP, States: snapshot.AllStates}
	if err := conn.Dump(&tab, []diag.Request{req}); err != nil || tab.Len() != n {
		t.Fatalf("unfiltered dump: %d sockets, %v", tab.Len(), err)
	}
	req.Bytecode = bc
	if err := conn.Dump(&tab, []diag.Request{req}); err != nil || tab.Len() != kept {
		t.Fatalf("filtered dump: %d sockets, %v; want %d", tab.Len(), err, kept)
	}
	for i := range tab.Sockets {
		if p := tab.Sockets[i].Src.Port(); p < base || p >= base+kept {
			t.Errorf("filtered dump has port %d", p)
		}
	}
}

// rawDump sends one UDP/IPv4 dump request with bytecode on a netlink
// socket of its own in ns, and counts the socket messages and the bytes
// the kernel sends until the end of the dump.
func rawDump(t *testing.T, ns *netnstest.NS, bytecode []byte) (msgs, bytes int) {
	t.Helper()
	var fd int
	err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// A bound on a kernel that stops answering, not a timing assertion.
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	const seq = 77
	req := snapshot.AppendDumpRequest(nil, seq, snapshot.FamilyIPv4, snapshot.ProtoUDP, 0, snapshot.AllStates, bytecode)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		nr, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("recvfrom: %v", err)
		}
		bytes += nr
		it := snapshot.NewMsgIter(buf[:nr])
		for {
			h, payload, ok := it.Next()
			if !ok {
				break
			}
			if h.Seq != seq {
				t.Fatalf("message of sequence %d", h.Seq)
			}
			switch h.Type {
			case snapshot.SockDiagByFam:
				msgs++
			case snapshot.MsgDone:
				return msgs, bytes
			case snapshot.MsgError:
				code, _ := snapshot.ParseErrno(payload)
				t.Fatalf("kernel error %v", unix.Errno(code))
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUDPConnectLeavesFilter pins the consequence docs/filters.md states
// for a socket whose addresses change: a bound UDP socket matches, then
// connect() gives it a remote address an exclude rule covers. The kernel
// program drops it from dumps from then on, and an exact lookup of its
// old addresses finds nothing, so the differ reports the old identity
// closed (reason gone) and never sees the new one.
func TestUDPConnectLeavesFilter(t *testing.T) {
	ns := netnstest.New(t)
	ns.Run(t, "ip", "addr", "add", "10.1.0.1/32", "dev", "lo")
	ns.Run(t, "ip", "addr", "add", "10.2.0.1/32", "dev", "lo")
	conn := openConn(t, ns)
	var fd int
	err := ns.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Port: 5000, Addr: [4]byte{10, 1, 0, 1}})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	f := mustNew(t, parse(t, "  exclude:\n    - remote_cidrs: [10.2.0.0/16]\n"))
	bc, ok := f.Bytecode(snapshot.FamilyIPv4)
	if !ok {
		t.Fatal("no program")
	}
	plain := diag.Request{Family: snapshot.FamilyIPv4, Proto: snapshot.ProtoUDP, States: snapshot.AllStates}
	filtered := plain
	filtered.Bytecode = bc
	var tab snapshot.Table
	dump := func(r diag.Request) []snapshot.Socket {
		t.Helper()
		if err := conn.Dump(&tab, []diag.Request{r}); err != nil {
			t.Fatal(err)
		}
		return slices.Clone(tab.Sockets)
	}

	before := dump(filtered)
	if len(before) != 1 || !f.Match(&before[0]) {
		t.Fatalf("bound socket: kernel-filtered dump %+v", before)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 53, Addr: [4]byte{10, 2, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if after := dump(filtered); len(after) != 0 {
		t.Errorf("connected socket still in the kernel-filtered dump: %+v", after)
	}
	all := dump(plain)
	if len(all) != 1 || all[0].Cookie != before[0].Cookie || f.Match(&all[0]) {
		t.Fatalf("unfiltered dump after connect: %+v; want the same socket, rejected by Match", all)
	}
	res := make([]snapshot.LookupResult, 1)
	if err := conn.Lookup([]snapshot.Key{before[0].Key}, res); err != nil {
		t.Fatal(err)
	}
	if res[0] != snapshot.LookupGone {
		t.Errorf("lookup of the old addresses = %v, want gone", res[0])
	}
}
