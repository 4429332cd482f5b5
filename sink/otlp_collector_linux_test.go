//go:build linux

package sink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/otelcoltest"
	"github.com/connlogd/connlogd/spool"
)

// jsonPlain decodes an event line the way the otlp sink maps it
// (jsonNorm).
func jsonPlain(t *testing.T, line []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return jsonNorm(m).(map[string]any)
}

// TestOTLPCollector sends events in each schema to a real OpenTelemetry
// Collector (OTLP/HTTP receiver, file exporter): each arrives as one log
// record whose body is the schema's event object, nested objects as
// nested maps, with the event's time, its kind as the event name, and
// the host, service name and version as resource attributes.
func TestOTLPCollector(t *testing.T) {
	col := otelcoltest.Start(t)
	evs := benchEvents()
	for _, schemaName := range []string{"", config.SchemaECS, config.SchemaOCSF} {
		t.Run("schema="+schemaName, func(t *testing.T) {
			before, err := col.Records()
			if err != nil {
				t.Fatal(err)
			}
			tee := otlpTee(t, config.Sink{Type: config.SinkOTLP, Schema: schemaName,
				OTLP: &config.OTLP{Endpoint: col.Endpoint(), Compression: "gzip"}})
			for i := range evs {
				if err := tee.Write(&evs[i]); err != nil {
					t.Fatal(err)
				}
			}
			var recs []otelcoltest.Record
			deadline := time.Now().Add(time.Minute)
			for len(recs) < len(evs) {
				all, err := col.Records()
				if err != nil {
					t.Fatal(err)
				}
				recs = all[len(before):]
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d records in the collector's output after a minute", len(recs), len(evs))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := tee.Close(); err != nil {
				t.Fatal(err)
			}
			if len(recs) != len(evs) {
				t.Fatalf("%d records for %d events", len(recs), len(evs))
			}
			sch, _ := parseSchema(schemaName)
			enc := newSchemaEncoder(sch, "web-1", "1.2.3")
			for i, r := range recs {
				line, err := enc.encode(nil, &evs[i])
				if err != nil {
					t.Fatal(err)
				}
				if want := jsonPlain(t, line); !reflect.DeepEqual(r.Body(), want) {
					t.Errorf("record %d body:\n got %v\nwant %v", i, r.Body(), want)
				}
				if r.EventName != evs[i].Kind.String() || r.TimeUnixNano != uint64(evs[i].Time.UnixNano()) {
					t.Errorf("record %d: event name %q, time %d", i, r.EventName, r.TimeUnixNano)
				}
				if r.Resource["host.name"] != "web-1" || r.Resource["service.name"] != "connlogd" || r.Resource["service.version"] != "1.2.3" {
					t.Errorf("record %d resource %v", i, r.Resource)
				}
			}
			if st := tee.Stats()[0]; st.Written != uint64(len(evs)) || st.Dropped != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// collectorReasons returns the gap reasons of the collector's records
// once done says they are complete (or after two minutes).
func collectorReasons(t *testing.T, col *otelcoltest.Collector, done func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		recs, err := col.Records()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range recs {
			out = append(out, r.Str("reason"))
		}
		if done(out) || time.Now().After(deadline) {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOTLPSpoolFull: while the collector is away, a full spool drops its
// oldest events, counts them and says so; the newest all arrive once it
// is back, in order.
func TestOTLPSpoolFull(t *testing.T) {
	col := otelcoltest.Start(t)
	col.Stop()
	dir := t.TempDir() + "/spool"
	tee := otlpTee(t, config.Sink{Type: config.SinkOTLP, OTLP: &config.OTLP{Endpoint: col.Endpoint()},
		Spool: config.Spool{Dir: dir, MaxBytes: config.MinSpoolBytes}})
	pad := strings.Repeat("p", 1000)
	const total = 12000
	refusals := 0
	for i := range total {
		if err := tee.Write(gapAt(fmt.Sprintf("%06d%s", i, pad))); err != nil {
			if !strings.Contains(err.Error(), "spool full") {
				t.Fatal(err)
			}
			refusals++
		}
	}
	st := tee.Stats()[0]
	drop := st.DroppedBy[DropSpoolFull]
	if drop == 0 || st.Dropped != drop || st.Queued+drop != total || refusals == 0 || st.Spool.Bytes > config.MinSpoolBytes {
		t.Fatalf("after %d events into a full spool: %+v %+v, %d writes reported drops", total, st, st.Spool, refusals)
	}
	col.Restart()
	waitFor(t, func() bool { return tee.Stats()[0].Queued == 0 })
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	st = tee.Stats()[0]
	got := collectorReasons(t, col, func(rs []string) bool {
		return len(rs) > 0 && rs[len(rs)-1][:6] == fmt.Sprintf("%06d", total-1)
	})
	// Every event arrived or was counted dropped: the newest total-drop
	// all arrived, in order, after any others. A batch the sender had
	// read when its events were dropped for room may still arrive: at
	// most one batch of events counted as dropped is delivered.
	seen := map[int]bool{}
	early, prev := 0, -1
	for _, r := range got {
		i := mustAtoi(r[:6])
		if seen[i] || i < 0 || i >= total {
			t.Fatalf("event %d delivered twice or unknown", i)
		}
		seen[i] = true
		if i < int(drop) {
			early++
		} else if i != prev+1 && prev >= int(drop) {
			t.Fatalf("event %d after %d: out of order", i, prev)
		}
		if i >= int(drop) {
			prev = i
		}
	}
	for i := int(drop); i < total; i++ {
		if !seen[i] {
			t.Fatalf("event %d neither delivered nor counted dropped", i)
		}
	}
	if early > otlpBatchEvents {
		t.Fatalf("%d events counted as dropped were delivered; at most one batch (%d) may be", early, otlpBatchEvents)
	}
	t.Logf("%d events, %d dropped for room (oldest; %d of them had been read for sending and arrived), %d delivered", total, drop, early, len(got))
}

// TestOTLPSpoolTornTail: a record torn at the spool's tail (a crash in
// the middle of a write) is cut at the next start, never sent; the whole
// records before it are.
func TestOTLPSpoolTornTail(t *testing.T) {
	col := otelcoltest.Start(t)
	col.Stop()
	dir := t.TempDir() + "/spool"
	spec := config.Sink{Type: config.SinkOTLP, OTLP: &config.OTLP{Endpoint: col.Endpoint()},
		DrainTimeout: 100 * time.Millisecond, Spool: config.Spool{Dir: dir}}
	tee := otlpTee(t, spec)
	for i := range 100 {
		tee.Write(gapAt(fmt.Sprintf("%03d", i)))
	}
	tee.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	// The start of one more record: its header and part of its payload,
	// as a write cut by a crash leaves it.
	first := data[8 : 8+spool.HeaderSize+40]
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(first)
	f.Close()

	col.Restart()
	tee = otlpTee(t, spec)
	if st := tee.Stats()[0]; st.Spool.TornBytes != int64(len(first)) || st.Spool.Recovered != 100 {
		t.Fatalf("after the torn write: %+v", st.Spool)
	}
	got := collectorReasons(t, col, func(rs []string) bool { return len(rs) >= 100 })
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 100 {
		t.Fatalf("collector has %d events, want 100", len(got))
	}
	for i, r := range got {
		if r != fmt.Sprintf("%03d", i) {
			t.Fatalf("record %d is %q", i, r)
		}
	}
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscanf(s, "%d", &n)
	return n
}
