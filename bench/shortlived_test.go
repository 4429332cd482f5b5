//go:build linux

package bench

import (
	"io"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/sink"
	"github.com/connlogd/connlogd/snapshot"
)

// BenchmarkShortLived is the user-space work of one short-lived TCP
// connection on loopback, as bench/churn makes them: the destroy
// notifications of its two sockets (client and server) through
// differ.Destroyed, 32 to a batch as the daemon reads them, and their four
// events (appeared and closed of each) encoded in the native schema and
// written to a file sink, synced once a batch. An empty poll every 2,000
// connections expires the differ's dead-socket entries, as the daemon's
// poll once a second at 2,000 connections/s does. No syscall but the
// sink's writes: the kernel's share of a connection (reading the
// notifications, the dumps) is bench/churn's. One op is one connection;
// cpu-ns/op is the process's CPU per connection. "discard" writes to
// io.Discard: the encoding alone.
func BenchmarkShortLived(b *testing.B) {
	for _, out := range []string{"file", "discard"} {
		b.Run(out, func(b *testing.B) {
			var tee *sink.Tee
			var err error
			if out == "file" {
				tee, err = sink.New([]config.Sink{{Type: config.SinkFile, Path: filepath.Join(b.TempDir(), "events.jsonl")}}, "bench")
			} else {
				tee, err = sink.NewWriter(io.Discard, "bench")
			}
			if err != nil {
				b.Fatal(err)
			}
			defer tee.Close()
			d := differ.New(differ.Options{Destroy: true, Output: func(ev *event.Event) {
				if err := tee.Write(ev); err != nil {
					b.Fatal(err)
				}
			}})
			now := time.Now()
			var empty snapshot.Table
			d.Diff(&empty, now, nil) // start-up: nothing initial
			const batch = 32
			var tab snapshot.Table
			port, cookie := uint16(1024), uint64(1<<20)
			loop(b, func() int {
				if len(tab.Sockets) == 2*batch {
					now = now.Add(time.Millisecond)
					d.Destroyed(&tab, now)
					if err := tee.Sync(); err != nil {
						b.Fatal(err)
					}
					tab.Reset()
				}
				if cookie%4000 == 0 {
					d.Diff(&empty, now, nil)
				}
				port++
				if port == 0 {
					port = 1024
				}
				client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
				server := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1 + byte(cookie%4)}), 65102)
				for _, ends := range [2][2]netip.AddrPort{{client, server}, {server, client}} {
					cookie++
					s := tab.Append()
					*s = snapshot.Socket{
						Key:      snapshot.Key{Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: cookie, Src: ends[0], Dst: ends[1]},
						State:    snapshot.StateClose,
						CgroupID: 4242,
						HasInfo:  true,
						Info: snapshot.TCPInfo{Len: 232, RTT: 40, RTTVar: 20, BytesAcked: 101, BytesReceived: 100,
							SegsOut: 5, SegsIn: 5, BytesSent: 100},
					}
				}
				return 2
			})
		})
	}
}
