//go:build linux

package diag

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/snapshot"
)

var allReqs = Requests(
	[]snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
	[]snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, true)

// openIn opens a Conn inside ns: the socket belongs to that namespace.
func openIn(t *testing.T, ns *netnstest.NS) *Conn {
	t.Helper()
	var c *Conn
	if err := ns.Do(func() (err error) { c, err = Open(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func find(t *snapshot.Table, proto snapshot.Proto, local netip.AddrPort, st snapshot.State) *snapshot.Socket {
	for i := range t.Sockets {
		s := &t.Sockets[i]
		if s.Proto == proto && s.Src == local && s.State == st {
			return s
		}
	}
	return nil
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	panic("unexpected address type")
}

func TestDumpAndLookup(t *testing.T) {
	ns := netnstest.New(t)
	c := openIn(t, ns)

	var ln4, ln6 net.Listener
	var cl, sv net.Conn
	var udpBound *net.UDPConn
	var udpConn net.Conn
	err := ns.Do(func() (err error) {
		if ln4, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		if ln6, err = net.Listen("tcp6", "[::1]:0"); err != nil {
			return err
		}
		if cl, err = net.Dial("tcp4", ln4.Addr().String()); err != nil {
			return err
		}
		if sv, err = ln4.Accept(); err != nil {
			return err
		}
		if udpBound, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
			return err
		}
		udpConn, err = net.Dial("udp4", "127.0.0.1:9")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	defer ln6.Close()
	defer cl.Close()
	defer sv.Close()
	defer udpBound.Close()
	defer udpConn.Close()
	payload := make([]byte, 100)
	if _, err := cl.Write(payload); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Read(make([]byte, 200)); err != nil {
		t.Fatal(err)
	}

	var tab snapshot.Table
	if err := c.Dump(&tab, allReqs); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name  string
		proto snapshot.Proto
		local netip.AddrPort
		state snapshot.State
	}{
		{"tcp4 listener", snapshot.ProtoTCP, addrPort(ln4.Addr()), snapshot.StateListen},
		{"tcp6 listener", snapshot.ProtoTCP, addrPort(ln6.Addr()), snapshot.StateListen},
		{"tcp client", snapshot.ProtoTCP, addrPort(cl.LocalAddr()), snapshot.StateEstablished},
		{"tcp server", snapshot.ProtoTCP, addrPort(sv.LocalAddr()), snapshot.StateEstablished},
		{"udp6 bound", snapshot.ProtoUDP, addrPort(udpBound.LocalAddr()), snapshot.StateClose},
		{"udp4 connected", snapshot.ProtoUDP, addrPort(udpConn.LocalAddr()), snapshot.StateEstablished},
	}
	if tab.Len() != len(want) {
		t.Errorf("dump has %d sockets, want %d: %+v", tab.Len(), len(want), tab.Sockets)
	}
	var keys []snapshot.Key
	for _, w := range want {
		s := find(&tab, w.proto, w.local, w.state)
		if s == nil {
			t.Fatalf("%s: not in dump", w.name)
		}
		if s.Cookie == 0 || s.Inode == 0 {
			t.Errorf("%s: cookie %d inode %d, want both set", w.name, s.Cookie, s.Inode)
		}
		keys = append(keys, s.Key)
	}
	client := find(&tab, snapshot.ProtoTCP, addrPort(cl.LocalAddr()), snapshot.StateEstablished)
	if !client.HasInfo || client.Info.Len < 208 {
		t.Fatalf("client tcp_info: has %v, %d bytes", client.HasInfo, client.Info.Len)
	}
	if client.Info.BytesSent < 100 || client.Info.BytesAcked < 100 {
		t.Errorf("client bytes_sent %d bytes_acked %d, want >= 100", client.Info.BytesSent, client.Info.BytesAcked)
	}
	server := find(&tab, snapshot.ProtoTCP, addrPort(sv.LocalAddr()), snapshot.StateEstablished)
	if server.Info.BytesReceived != 100 {
		t.Errorf("server bytes_received %d, want 100", server.Info.BytesReceived)
	}

	res := make([]snapshot.LookupResult, len(keys))
	if err := c.Lookup(keys, res); err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r != snapshot.LookupAlive {
			t.Errorf("%s: lookup of a live socket = %v, want alive", want[i].name, r)
		}
	}

	// Close everything but the listeners: lookups must now say gone.
	udpBound.Close()
	udpConn.Close()
	ln6.Close()
	cl.Close()
	sv.Close()
	time.Sleep(50 * time.Millisecond)
	if err := c.Lookup(keys, res); err != nil {
		t.Fatal(err)
	}
	wantRes := []snapshot.LookupResult{snapshot.LookupAlive, snapshot.LookupGone, 0, 0, snapshot.LookupGone, snapshot.LookupGone}
	for i, r := range res {
		if i == 2 || i == 3 {
			// The TCP pair lingers in TIME_WAIT or FIN states: same cookie,
			// so the lookup still finds it, which is right.
			continue
		}
		if r != wantRes[i] {
			t.Errorf("%s after close: lookup = %v, want %v", want[i].name, r, wantRes[i])
		}
	}
	if st := c.Stats(); st != (snapshot.Stats{}) {
		t.Errorf("stats = %+v, want zero", st)
	}
}
