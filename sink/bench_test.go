package sink

import (
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
)

// benchTee writes b.N events through tee, syncing every 64 as the daemon
// does once per poll, and reports the rate.
func benchTee(b *testing.B, tee *Tee, evs []event.Event) {
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := tee.Write(&evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			if err := tee.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := tee.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkEncode measures the native encoding through a file sink.
func BenchmarkEncode(b *testing.B) {
	all := benchEvents()
	for _, bc := range []struct {
		name string
		evs  []event.Event
	}{
		{"appeared", all[0:1]},
		{"closed_tcp6_info", all[2:3]},
		{"gap", all[3:4]},
		{"mixed", all},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tee, err := New([]config.Sink{{Type: config.SinkFile, Path: filepath.Join(b.TempDir(), "events.json")}}, "web-1")
			if err != nil {
				b.Fatal(err)
			}
			defer tee.Close()
			benchTee(b, tee, bc.evs)
		})
	}
}

// BenchmarkEncodeDiscard is BenchmarkEncode without the file system: the
// CPU cost of encoding and buffering alone, steadier than a disk.
func BenchmarkEncodeDiscard(b *testing.B) {
	tee, err := NewWriter(io.Discard, "web-1")
	if err != nil {
		b.Fatal(err)
	}
	defer tee.Close()
	benchTee(b, tee, benchEvents())
}

// BenchmarkSyslogUDP measures RFC 5424 framing and one sendto per event.
// Nobody reads the socket; the kernel discards what overflows.
func BenchmarkSyslogUDP(b *testing.B) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	tee, err := New([]config.Sink{{Type: config.SinkSyslog, Network: "udp", Address: pc.LocalAddr().String()}}, "web-1")
	if err != nil {
		b.Fatal(err)
	}
	defer tee.Close()
	benchTee(b, tee, benchEvents())
}
