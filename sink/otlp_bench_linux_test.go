//go:build linux

package sink

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/otelcoltest"
)

// benchOTLP writes b.N events through an otlp sink and reports the rate
// at which the receiver acknowledges them: the clock stops when the last
// is Written (answered 2xx). The producer yields while more than 32,768
// events wait, so that the figure is the sender's, not the drop rate.
func benchOTLP(b *testing.B, spec config.Sink) {
	spec.Type = config.SinkOTLP
	spec.QueueSize = 1 << 16
	tee, err := Open([]config.Sink{spec}, Options{Host: "web-1", Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer tee.Close()
	o := tee.outs[0].(*otlpSink)
	evs := benchEvents()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for o.store.queued() > 1<<15 {
			runtime.Gosched()
		}
		if err := tee.Write(&evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			tee.Sync()
		}
	}
	for o.written.Load()+o.dropped.total() < uint64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if d := o.dropped.total(); d != 0 {
		b.Fatalf("%d events dropped", d)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

// BenchmarkOTLPCollector sends to a real OpenTelemetry Collector (OTLP
// receiver, file exporter) on loopback, with the memory queue and with a
// spool; the collector shares the machine's cores.
func BenchmarkOTLPCollector(b *testing.B) {
	col := otelcoltest.Start(b)
	b.Run("memory", func(b *testing.B) {
		benchOTLP(b, config.Sink{OTLP: &config.OTLP{Endpoint: col.Endpoint()}})
	})
	b.Run("spool", func(b *testing.B) {
		benchOTLP(b, config.Sink{OTLP: &config.OTLP{Endpoint: col.Endpoint()},
			Spool: config.Spool{Dir: b.TempDir() + "/spool", MaxBytes: 4 << 30}})
	})
	b.Run("spool_gzip", func(b *testing.B) {
		benchOTLP(b, config.Sink{OTLP: &config.OTLP{Endpoint: col.Endpoint(), Compression: "gzip"},
			Spool: config.Spool{Dir: b.TempDir() + "/spool", MaxBytes: 4 << 30}})
	})
}

// BenchmarkOTLPDiscard sends to a receiver that answers 200 without
// decoding: the sink's own cost (encoding, spool, HTTP).
func BenchmarkOTLPDiscard(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		for {
			if _, err := r.Body.Read(buf); err != nil {
				break
			}
		}
	}))
	defer srv.Close()
	b.Run("memory", func(b *testing.B) {
		benchOTLP(b, config.Sink{OTLP: &config.OTLP{Endpoint: srv.URL}})
	})
	b.Run("spool", func(b *testing.B) {
		benchOTLP(b, config.Sink{OTLP: &config.OTLP{Endpoint: srv.URL},
			Spool: config.Spool{Dir: b.TempDir() + "/spool", MaxBytes: 4 << 30}})
	})
}

// BenchmarkOTLPRequest measures building one request of 2048 mixed
// native events (the body maps and the protobuf encoding), the sender's
// CPU cost per event apart from the network and the receiver.
func BenchmarkOTLPRequest(b *testing.B) {
	o := &otlpSink{host: "web-1", version: "bench"}
	evs := benchEvents()
	enc := newSchemaEncoder(schemaNative, "web-1", "bench")
	var bt batch
	var m []byte
	for i := range 2048 {
		line, err := enc.encode(nil, &evs[i%len(evs)])
		if err != nil {
			b.Fatal(err)
		}
		ent := entry(&evs[i%len(evs)])
		m = append(m[:0], make([]byte, 8)...)
		m = append(m, byte(ent.Level+1), byte(len(ent.Message)))
		m = append(m, ent.Message...)
		bt.add(append(m, line[:len(line)-1]...))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if body, bad := o.request(&bt); body == nil || bad != 0 {
			b.Fatalf("request: %d bad", bad)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2048), "ns/event")
}
