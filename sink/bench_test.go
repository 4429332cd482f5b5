package sink

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
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

// BenchmarkFileSchemas is BenchmarkEncode's mixed events in each schema.
func BenchmarkFileSchemas(b *testing.B) {
	for _, sch := range []string{"native", "ecs", "ocsf"} {
		b.Run(sch, func(b *testing.B) {
			tee, err := New([]config.Sink{{Type: config.SinkFile, Path: filepath.Join(b.TempDir(), "events.json"), Schema: sch}}, "web-1")
			if err != nil {
				b.Fatal(err)
			}
			defer tee.Close()
			benchTee(b, tee, benchEvents())
		})
	}
}

// BenchmarkEncodeSchemas is BenchmarkEncodeDiscard in each schema, with
// owners and namespaces: the encoder's CPU cost alone.
func BenchmarkEncodeSchemas(b *testing.B) {
	evs := append(benchEvents(), attributionEvents()...)
	for _, s := range []schema{schemaNative, schemaECS, schemaOCSF} {
		b.Run([...]string{"native", "ecs", "ocsf"}[s], func(b *testing.B) {
			tee := &Tee{}
			tee.add(newStreamWriter("bench", io.Discard), s, Options{Host: "web-1", Version: "1.2.3"})
			defer tee.Close()
			benchTee(b, tee, evs)
		})
	}
}

// benchSyslog writes b.N events through a syslog sink and reports the
// rate at which they are delivered: the clock stops when the sender has
// written the last one. The producer yields while the queue is more
// than half full, so that the figure is the sender's, not the drop rate.
func benchSyslog(b *testing.B, spec config.Sink) {
	spec.Type = config.SinkSyslog
	spec.QueueSize = 1 << 16
	tee, err := New([]config.Sink{spec}, "web-1")
	if err != nil {
		b.Fatal(err)
	}
	defer tee.Close()
	ss := tee.outs[0].(*syslogSink)
	evs := benchEvents()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for ss.q.queued() > spec.QueueSize/2 {
			runtime.Gosched()
		}
		if err := tee.Write(&evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
	}
	for ss.written.Load()+ss.dropped.total() < uint64(b.N) {
		runtime.Gosched()
	}
	// RELP: until the receiver has answered the last.
	for ss.tr.relpAcked.Load() < ss.tr.relpSeq.Load() {
		runtime.Gosched()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if d := ss.dropped.total(); d != 0 {
		b.Fatalf("%d events dropped", d)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

// BenchmarkSyslogUDP measures RFC 5424 framing and one sendto per event.
// Nobody reads the socket; the kernel discards what overflows.
func BenchmarkSyslogUDP(b *testing.B) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	benchSyslog(b, config.Sink{Network: "udp", Address: pc.LocalAddr().String()})
}

// BenchmarkSyslogTCP and BenchmarkSyslogTLS deliver to a loopback
// receiver that reads and discards, TLS with a P-256 certificate and
// whatever cipher Go negotiates (AES-GCM with TLS 1.3).
func BenchmarkSyslogTCP(b *testing.B) {
	addr := discardServer(b, nil)
	benchSyslog(b, config.Sink{Network: "tcp", Address: addr})
}

func BenchmarkSyslogTLS(b *testing.B) {
	pki := newTestPKI(b)
	addr := discardServer(b, &tls.Config{Certificates: []tls.Certificate{pki.serverPair}})
	benchSyslog(b, config.Sink{Network: "tls", Address: addr, TLS: config.TLS{CAFile: pki.caFile}})
}

// RELP on loopback, plain and over TLS, to a receiver that answers every
// message (in batches, as librelp does when frames arrive together).
func BenchmarkSyslogRELP(b *testing.B) {
	benchSyslog(b, config.Sink{Network: "relp", Address: relpAnswerServer(b, nil)})
}

func BenchmarkSyslogRELPTLS(b *testing.B) {
	pki := newTestPKI(b)
	addr := relpAnswerServer(b, &tls.Config{Certificates: []tls.Certificate{pki.serverPair}})
	benchSyslog(b, config.Sink{Network: "relp-tls", Address: addr, TLS: config.TLS{CAFile: pki.caFile}})
}

// relpAnswerServer accepts RELP sessions and answers every command 200.
func relpAnswerServer(b *testing.B, conf *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br, bw := bufio.NewReaderSize(c, 64<<10), bufio.NewWriter(c)
				var buf, out []byte
				for {
					var f relpFrame
					if f, buf, err = readRELP(br, buf); err != nil {
						return
					}
					out = strconv.AppendUint(out[:0], f.txnr, 10)
					out = append(out, " rsp 6 200 OK\n"...)
					bw.Write(out)
					if br.Buffered() == 0 {
						if bw.Flush() != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// discardServer accepts connections and reads them to the end.
func discardServer(b *testing.B, conf *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}
