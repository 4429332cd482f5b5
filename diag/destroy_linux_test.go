//go:build linux

package diag

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/snapshot"
)

// openDestroyIn subscribes to TCP/IPv4 destroys inside ns, with a
// receive buffer of bufSize.
func openDestroyIn(t *testing.T, ns *netnstest.NS, bufSize int) *Destroy {
	t.Helper()
	var d *Destroy
	if err := ns.Do(func() (err error) {
		d, err = OpenDestroy([]snapshot.Proto{snapshot.ProtoTCP}, []snapshot.Family{snapshot.FamilyIPv4}, bufSize)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// waitAndDrain waits for a notification and drains what is queued into
// t, for at most a minute.
func waitAndDrain(t *testing.T, d *Destroy, tab *snapshot.Table) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- d.WaitReadable() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitReadable = %v", err)
		}
	case <-time.After(time.Minute):
		d.Close()
		t.Fatal("no notification within a minute")
	}
	for {
		full, err := d.Drain(tab)
		if err != nil || !full {
			return err
		}
	}
}

// TestDestroyNotification: a loopback connection's close comes with its
// tuple and cookie, read through the wait and the drain the engine uses;
// an abortive close (SO_LINGER 0) comes as docs/events.md says, with the
// local address and the peer's port cleared by the kernel.
func TestDestroyNotification(t *testing.T) {
	for _, abort := range []bool{false, true} {
		name := "fin"
		if abort {
			name = "abortive"
		}
		t.Run(name, func(t *testing.T) {
			ns := netnstest.New(t)
			d := openDestroyIn(t, ns, 0)
			var client, server netip.AddrPort
			if err := ns.Do(func() error {
				l, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					return err
				}
				defer l.Close()
				c, err := net.Dial("tcp4", l.Addr().String())
				if err != nil {
					return err
				}
				client, server = addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
				s, err := l.Accept()
				if err != nil {
					c.Close()
					return err
				}
				// The server closes first: the client's socket is
				// destroyed when the last ACK of its own close comes,
				// with no TIME_WAIT.
				s.Close()
				if abort {
					c.(*net.TCPConn).SetLinger(0)
				}
				return c.Close()
			}); err != nil {
				t.Fatal(err)
			}
			wantSrc, wantDst := client, server
			if abort {
				wantSrc = netip.AddrPortFrom(netip.IPv4Unspecified(), client.Port())
				wantDst = netip.AddrPortFrom(server.Addr(), 0)
			}
			var tab snapshot.Table
			for deadline := time.Now().Add(time.Minute); ; {
				if err := waitAndDrain(t, d, &tab); err != nil {
					t.Fatal(err)
				}
				for i := range tab.Sockets {
					if s := &tab.Sockets[i]; s.Proto == snapshot.ProtoTCP && s.Src.Port() == client.Port() {
						if s.Src != wantSrc || s.Dst != wantDst || s.Cookie == 0 || s.State != snapshot.StateClose {
							t.Fatalf("the client's close: %+v; want %v → %v, a cookie, state close", s, wantSrc, wantDst)
						}
						return
					}
				}
				if time.Now().After(deadline) {
					t.Fatal("the client's close was not announced within a minute")
				}
			}
		})
	}
}

// TestDestroyOverrun: notifications the kernel dropped for a full
// receive buffer are reported by Drain as ErrOverrun, after a wait, so
// that the engine reports a gap and resynchronises.
func TestDestroyOverrun(t *testing.T) {
	ns := netnstest.New(t)
	d := openDestroyIn(t, ns, 1) // the smallest buffer: a few messages
	var tab snapshot.Table
	for deadline := time.Now().Add(time.Minute); ; {
		ns.CloseTCP4(t, 100)
		err := waitAndDrain(t, d, &tab)
		if errors.Is(err, ErrOverrun) {
			break
		}
		if err != nil {
			t.Fatalf("Drain = %v, want ErrOverrun", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no overrun within a minute of closes into a buffer of a few messages")
		}
	}
	// What the buffer held is still read after the overrun (more
	// overruns may come meanwhile: the kernel's work queue goes on).
	tab.Reset()
	for deadline := time.Now().Add(time.Minute); tab.Len() == 0; {
		if err := waitAndDrain(t, d, &tab); err != nil && !errors.Is(err, ErrOverrun) {
			t.Fatalf("Drain after the overrun = %v", err)
		}
		if tab.Len() == 0 && time.Now().After(deadline) {
			t.Fatal("nothing read within a minute of the overrun, though the buffer was full")
		}
	}
}
