//go:build linux

package diag

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/snapshot"
)

var captureDir = flag.String("capture", "", "write raw dump datagrams of a known socket set to this directory (refreshes snapshot/testdata)")

// TestCapture records the raw replies of each dump of a namespace holding
// a known set of sockets; snapshot's parser tests replay them. It runs
// only with -capture DIR.
func TestCapture(t *testing.T) {
	if *captureDir == "" {
		t.Skip("run with -capture ../snapshot/testdata to refresh the captures")
	}
	ns := netnstest.New(t)
	c := openIn(t, ns)
	var closers []func() error
	defer func() {
		for _, f := range closers {
			f()
		}
	}()
	err := ns.Do(func() error {
		for _, l := range []struct{ net, addr string }{{"tcp4", "127.0.0.1:4001"}, {"tcp6", "[::1]:4002"}} {
			ln, err := net.Listen(l.net, l.addr)
			if err != nil {
				return err
			}
			closers = append(closers, ln.Close)
			cl, err := net.Dial(l.net, l.addr)
			if err != nil {
				return err
			}
			sv, err := ln.Accept()
			if err != nil {
				return err
			}
			closers = append(closers, cl.Close)
			cl.Write([]byte("hello"))
			// A second pair closed by the client leaves a TIME_WAIT remnant.
			cl2, err := net.Dial(l.net, l.addr)
			if err != nil {
				return err
			}
			sv2, err := ln.Accept()
			if err != nil {
				return err
			}
			cl2.Close()
			time.Sleep(20 * time.Millisecond)
			sv2.Close()
			closers = append(closers, sv.Close)
		}
		for _, u := range []struct{ net, addr string }{{"udp4", "127.0.0.1:5001"}, {"udp6", "[::1]:5002"}} {
			pc, err := net.ListenPacket(u.net, u.addr)
			if err != nil {
				return err
			}
			closers = append(closers, pc.Close)
			dc, err := net.Dial(u.net, u.addr)
			if err != nil {
				return err
			}
			closers = append(closers, dc.Close)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	for _, r := range Requests([]snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
		[]snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6}, true) {
		var raw []byte
		c.tap = func(b []byte) { raw = append(raw, b...) }
		var tab snapshot.Table
		if err := c.Dump(&tab, []Request{r}); err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(*captureDir, fmt.Sprintf("dump_%s_%s.bin", r.Proto, r.Family))
		if err := os.WriteFile(name, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d sockets, %d bytes", name, tab.Len(), len(raw))
	}
	c.tap = nil
}
